"""The ``jobshelf`` command, run as installed, in a subprocess, against the embedded server."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.testing import state_difference

from .helpers import UTC, make_job

pytestmark = pytest.mark.subprocess
COMMAND = str(Path(sys.executable).with_name("jobshelf"))
# tests.* import in the command (for --allow), before whatever PYTHONPATH holds
ROOT = os.pathsep.join(
    filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])
)
T0 = dt.datetime(2031, 1, 1, tzinfo=UTC)
#: The jobs below call tests.helpers:dummy_job and this module's tick: the allow-list migrate reads with.
ALLOW = ("--allow", "tests.helpers", "--allow", "tests.test_cli")


def run(
    uri: str, database: str, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """``jobshelf ARGS --database DATABASE`` with the server's URI in the environment."""
    result = subprocess.run(
        [COMMAND, *args, "--database", database],
        env={**os.environ, "JOBSHELF_MONGODB_URI": uri, "PYTHONPATH": ROOT, **env},
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def every_trigger(index: int) -> Any:
    start = T0 + dt.timedelta(minutes=index)
    return [
        DateTrigger(start),
        IntervalTrigger(minutes=index + 1, start_date=start, timezone="Europe/Berlin"),
        CronTrigger(minute=index % 60, hour="*/3", timezone="America/New_York"),
        CalendarIntervalTrigger(months=1, hour=index % 24, start_date=start.date(), timezone="Asia/Tokyo"),
        AndTrigger([IntervalTrigger(hours=1, start_date=start), CronTrigger(minute=start.minute)]),
        OrTrigger([DateTrigger(start), CronTrigger(day_of_week="mon", hour=9)]),
    ][index % 6]


def fill_with_the_stock_store(client: MongoClient[Any], database: str, count: int) -> dict[str, Any]:
    scheduler = BackgroundScheduler(timezone=UTC)
    stock = StockStore(database=database, client=client)
    stock.start(scheduler, "default")
    states = {}
    for index in range(count):
        job = make_job(scheduler, f"job-{index:04}", trigger=every_trigger(index),
                       next_run_time=T0 + dt.timedelta(minutes=index),
                       args=(index, (index, "x")), kwargs={"when": T0, "tags": ["a", index]})  # fmt: skip
        stock.add_job(job)
        states[job.id] = job.__getstate__()
    return states


def assert_states(store: Any, expected: dict[str, Any]) -> None:
    jobs = {job.id: job for job in store.get_all_jobs()}
    assert sorted(jobs) == sorted(expected)
    for job_id, state in expected.items():
        difference = state_difference(state, jobs[job_id].__getstate__())
        assert difference is None, (job_id, difference)


def test_migrate_to_msgpack_and_back_loses_nothing(
    mongodb_uri: str, mongo_client: Any, database: str
) -> None:
    expected = fill_with_the_stock_store(mongo_client, database, 300)
    dry = run(mongodb_uri, database, "migrate", "--to", "msgpack", "--dry-run", *ALLOW)
    assert "would migrate │ 300" in dry.stdout
    assert mongo_client[database].jobs.count_documents({FORMAT_FIELD: "msgpack"}) == 0  # nothing written

    forward = run(mongodb_uri, database, "migrate", "--to", "msgpack", "--yes", *ALLOW)
    assert "migrated │ 300" in forward.stdout
    assert mongo_client[database].jobs.count_documents({FORMAT_FIELD: "msgpack"}) == 300
    assert_states(MongoDBJobStore(database=database, client=mongo_client, serializer="msgpack"), expected)

    back = run(mongodb_uri, database, "migrate", "--to", "pickle", "--yes", *ALLOW)
    assert "migrated │ 300" in back.stdout
    stock = StockStore(database=database, client=mongo_client)
    stock.start(BackgroundScheduler(timezone=UTC), "default")
    assert_states(stock, expected)  # the stock store reads every one: it deletes nothing
    assert mongo_client[database].jobs.count_documents({}) == 300


def test_an_interrupted_migration_carries_on(mongodb_uri: str, mongo_client: Any, database: str) -> None:
    expected = fill_with_the_stock_store(mongo_client, database, 200)
    process = subprocess.Popen(
        [COMMAND, "migrate", "--database", database, "--to", "msgpack", "--yes", "--batch-size", "5", *ALLOW],
        env={**os.environ, "JOBSHELF_MONGODB_URI": mongodb_uri, "PYTHONPATH": ROOT},
        stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("migrating to msgpack:") and not line.startswith("migrating to msgpack: 200/"):
            process.send_signal(signal.SIGKILL)  # midway, as a crash or a kill -9 would stop it
            break
    process.wait(60)
    done = mongo_client[database].jobs.count_documents({FORMAT_FIELD: "msgpack"})
    assert 0 < done < 200, done
    again = run(mongodb_uri, database, "migrate", "--to", "msgpack", "--yes", *ALLOW)
    assert f"migrated │ {200 - done}" in again.stdout and f"already  │ {done}" in again.stdout
    assert_states(MongoDBJobStore(database=database, client=mongo_client, serializer="msgpack"), expected)


class RecordingStore(MongoDBJobStore):
    """The application's store: remembers the last next run time it wrote for each job."""

    last: dict[str, float]
    twenty: threading.Event  # set once 20 jobs have been updated

    def update_job(self, job: Any) -> None:
        super().update_job(job)
        self.last[job.id] = job.next_run_time.timestamp()
        if len(self.last) >= 20:
            self.twenty.set()


def tick() -> None:
    """A job for the live scheduler."""


def test_a_migration_beside_a_live_scheduler_overwrites_none_of_its_updates(
    mongodb_uri: str, mongo_client: Any, database: str
) -> None:
    store = RecordingStore(
        database=database, client=mongo_client, serializer="msgpack", accept=["msgpack", "pickle"]
    )
    store.last, store.twenty = {}, threading.Event()
    writer = MongoDBJobStore(database=database, client=mongo_client)  # pickle, as before the switch
    setup = BackgroundScheduler(timezone=UTC)
    writer.start(setup, "default")
    now = dt.datetime.now(UTC)
    for index in range(150):
        interval = IntervalTrigger(seconds=0.05 + (index % 5) * 0.05, start_date=now)
        writer.add_job(make_job(setup, f"live-{index:03}", func=tick, trigger=interval, next_run_time=now))
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store},
                                    job_defaults={"misfire_grace_time": None, "coalesce": True})  # fmt: skip
    scheduler.start()
    try:
        assert store.twenty.wait(30), f"the scheduler updated {len(store.last)} jobs in 30 s"
        result = run(mongodb_uri, database, "migrate", "--to", "msgpack", "--yes", *ALLOW, check=False)
        assert result.returncode in (0, 3), result.stderr
    finally:
        scheduler.shutdown(wait=True)
    documents = {doc["_id"]: doc for doc in mongo_client[database].jobs.find()}
    assert len(documents) == 150
    overwritten = [job_id for job_id, written in store.last.items()
                   if documents[job_id]["next_run_time"] != written]  # fmt: skip
    assert overwritten == []
    assert all(doc[FORMAT_FIELD] == "msgpack" for doc in documents.values())


def test_list_json_is_stable_and_parses(mongodb_uri: str, mongo_client: Any, database: str) -> None:
    fill_with_the_stock_store(mongo_client, database, 12)
    rows = json.loads(run(mongodb_uri, database, "list", "--json", "--tz", "Europe/Berlin").stdout)
    assert len(rows) == 12
    assert set(rows[0]) == {"id", "name", "callable", "trigger", "next_run_time", "format", "size", "state",
                            "decoded", "note", "quarantine_reason"}  # fmt: skip
    first = rows[0]
    assert first["id"] == "job-0000" and first["callable"] == "tests.helpers:dummy_job"
    assert first["trigger"] == "date[2031-01-01 00:00:00 UTC]"
    assert first["next_run_time"] == "2031-01-01T01:00:00+01:00"
    assert (first["format"], first["state"], first["decoded"]) == ("pickle", "scheduled", True)
    only = json.loads(run(mongodb_uri, database, "list", "--json", "--format", "msgpack").stdout)
    assert only == []
    table = run(mongodb_uri, database, "list").stdout  # brackets in data are data, not console markup
    assert "cron[hour='*/3', minute='2']" in table and "interval[0:02:00]" in table


class Forged:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_inspect_does_not_run_a_forged_pickle(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path
) -> None:
    state = make_job(BackgroundScheduler(), "forged", next_run_time=T0).__getstate__()
    state["args"] = (Forged(tmp_path / "pwned"),)
    mongo_client[database].jobs.insert_one({"_id": "forged", "next_run_time": T0.timestamp(),
                                            "job_state": pickle.dumps(state)})  # fmt: skip
    shown = run(mongodb_uri, database, "inspect", "forged", "--disassemble")
    assert "<unresolved posix.system(" in shown.stdout and "STACK_GLOBAL" in shown.stdout
    listed = run(mongodb_uri, database, "list")
    migrated = run(mongodb_uri, database, "migrate", "--to", "msgpack", "--yes", *ALLOW, check=False)
    assert migrated.returncode == 3 and "posix.system is not part of a job state" in migrated.stdout
    assert "forged" in listed.stdout
    assert not (tmp_path / "pwned").exists()
    run(mongodb_uri, database, "inspect", "forged", "--unsafe-run-code")  # the flag says it runs code
    assert (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "case",
    [
        (
            ["list", "--uri", "mongodb://127.0.0.1:9", "--timeout", "0.3"],
            2,
            ".jobs on 127.0.0.1:9: 127.0.0.1:9: [Errno 111] Connection refused. Check --uri",
        ),
        (["migrate", "--to", "nosuch", "--yes"], 2, "unknown serializer 'nosuch'; available:"),
        (["list", "--collection", "nope"], 2, "there is no collection"),
        (["inspect", "missing"], 1, "no job 'missing'"),
        (["list", "--tz", "Mars/Base"], 2, "unknown time zone 'Mars/Base'"),
        (
            ["migrate", "--to", "signed+pickle", "--yes"],
            2,
            "needs the signing keys: set JOBSHELF_SIGNING_KEYS",
        ),
        (["migrate", "--to", "msgpack"], 2, "pass --yes to confirm"),
    ],
)
def test_bad_input_gets_one_clear_line(
    mongodb_uri: str, mongo_client: Any, database: str, case: tuple[list[str], int, str]
) -> None:
    args, code, message = case
    fill_with_the_stock_store(mongo_client, database, 2)
    before = list(mongo_client[database].jobs.find())
    result = run(mongodb_uri, database, *args, check=False)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(mongo_client[database].jobs.find()) == before  # nothing written


def test_signed_formats_read_with_keys_from_the_environment(
    mongodb_uri: str, mongo_client: Any, database: str
) -> None:
    fill_with_the_stock_store(mongo_client, database, 3)
    keys = {"JOBSHELF_SIGNING_KEYS": "an-old-key-of-32-characters-----,a-new-key-of-32-characters------"}
    run(mongodb_uri, database, "migrate", "--to", "signed+msgpack", "--yes", *ALLOW, **keys)
    assert mongo_client[database].jobs.count_documents({FORMAT_FIELD: "signed+msgpack"}) == 3
    rows = json.loads(run(mongodb_uri, database, "list", "--json", **keys).stdout)
    assert [row["decoded"] for row in rows] == [True, True, True]
    unkeyed = run(mongodb_uri, database, "status")
    assert "signed+msgpack: needs the signing keys: set JOBSHELF_SIGNING_KEYS" in unkeyed.stdout

    # beside them: two stock (untagged) pickles and one tagged "pickle": one line for pickle, and
    # the jobs it cannot read are not counted as scheduled, nor as the earliest
    stock, scheduler = StockStore(database=database, client=mongo_client), BackgroundScheduler(timezone=UTC)
    stock.start(scheduler, "default")
    for index, job_id in enumerate(["stock-0", "stock-1", "tagged"]):
        stock.add_job(make_job(scheduler, job_id, next_run_time=T0 - dt.timedelta(minutes=index - 1)))
    jobs = mongo_client[database].jobs
    jobs.update_one({"_id": "tagged"}, {"$set": {FORMAT_FIELD: "pickle"}})
    jobs.update_many({FORMAT_FIELD: "signed+msgpack"}, {"$set": {"next_run_time": T0.timestamp() - 3600}})
    status = run(mongodb_uri, database, "status").stdout
    assert "6 (3 scheduled, 0 paused, 0 quarantined, 3 in formats unreadable here)" in status, status
    assert "pickle 3 (2 untagged, as the stock store writes), signed+msgpack 3" in status, status
    assert f"{(T0 - dt.timedelta(minutes=1)).isoformat()} (job 'tagged')" in status, status


def test_status_and_quarantine_commands(mongodb_uri: str, mongo_client: Any, database: str) -> None:
    fill_with_the_stock_store(mongo_client, database, 4)
    state = make_job(BackgroundScheduler(), "broken", next_run_time=T0).__getstate__()
    state["func"] = "tests.not_deployed:task"
    mongo_client[database].jobs.insert_one({"_id": "broken", "next_run_time": T0.timestamp(),
                                            "job_state": pickle.dumps(state)})  # fmt: skip
    store = MongoDBJobStore(database=database, client=mongo_client)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    assert store.lookup_job("broken") is None  # quarantined by a read
    status = run(mongodb_uri, database, "status").stdout
    assert "5 (4 scheduled, 0 paused, 1 quarantined)" in status and "pickle 5" in status
    assert "present" in status
    listed = json.loads(run(mongodb_uri, database, "quarantine", "list", "--json").stdout)
    assert [row["id"] for row in listed] == ["broken"] and "tests.not_deployed" in listed[0]["message"]
    restore = run(mongodb_uri, database, "quarantine", "restore", "broken", check=False)
    assert restore.returncode == 1 and "still quarantined" in restore.stderr
    missing = run(mongodb_uri, database, "quarantine", "remove", "job-0001", "--yes", check=False)
    assert missing.returncode == 1 and "no quarantined job 'job-0001'" in missing.stderr
    run(mongodb_uri, database, "quarantine", "remove", "broken", "--yes")
    assert sorted(mongo_client[database].jobs.distinct("_id")) == [f"job-{i:04}" for i in range(4)]


def test_without_click_the_command_names_the_install() -> None:
    code = "import sys; sys.modules['click'] = None; from jobshelf.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'jobshelf: the command needs click and rich (click is not installed): pip install "jobshelf[cli]"'
    )
