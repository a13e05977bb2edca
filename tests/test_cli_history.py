"""``jobshelf history`` and the history rows of ``jobshelf status``, run as installed, in a subprocess,
on records a real scheduler wrote (and on records another writer could have put there)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .helpers import UTC, RunLog, loop_is_alive

pytestmark = pytest.mark.subprocess
COMMAND = str(Path(sys.executable).with_name("jobshelf"))
ROOT = str(Path(__file__).resolve().parent.parent)
RUNS = RunLog()
#: The keys of every object ``jobshelf history --json`` prints (documented in the README).
KEYS = {"job_id", "scheduled_run_time", "submitted_at", "finished_at", "duration", "outcome", "error",
        "holder", "duplicate"}  # fmt: skip


def run(uri: str, database: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [COMMAND, *args, "--database", database],
        env={**os.environ, "JOBSHELF_MONGODB_URI": uri, "PYTHONPATH": path},
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def tick(name: str) -> None:
    RUNS.record(name)


def explode(name: str) -> None:
    RUNS.record(name)
    raise RuntimeError(f"{name}: \x1b]0;PWNED\x07 the disk is full")


def record_some_runs(client: MongoClient[Any], database: str) -> MongoDBJobStore:
    """A scheduler runs a ticker (executed), a job that fails, and a date job already too late."""
    RUNS.clear()
    store = MongoDBJobStore(database=database, client=client, history=True)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    ended = RunLog()
    scheduler.add_listener(lambda event: ended.record(str(event.code)), EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start()
    try:
        now = dt.datetime.now(UTC)
        scheduler.add_job(tick, IntervalTrigger(seconds=0.3, start_date=now), args=["ticker"], id="ticker",
                          misfire_grace_time=None, max_instances=100)  # fmt: skip
        scheduler.add_job(explode, "date", run_date=now, args=["nightly"], id="nightly")
        scheduler.add_job(tick, "date", run_date=now - dt.timedelta(minutes=5), args=["late"], id="late")
        assert RUNS.wait_until(lambda runs: runs["ticker"] >= 3 and runs["nightly"] == 1, 20)
        assert ended.wait_until(lambda events: sum(events.values()) == 2, 20)
        scheduler.pause_job("ticker")
        assert loop_is_alive(scheduler)  # the passes that submitted the last runs are over
    finally:
        scheduler.shutdown(wait=True)  # writes the last records
    return store


def test_history_lists_what_ran_as_a_table_and_as_json(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    store = record_some_runs(mongo_client, database)
    expected = store.get_job_history(limit=1000)
    rows = json.loads(run(mongodb_uri, database, "history", "--json").stdout)
    assert all(set(row) == KEYS for row in rows)
    assert [(row["job_id"], row["outcome"], row["scheduled_run_time"]) for row in rows] == [
        (r.job_id, r.outcome, r.scheduled_run_time and r.scheduled_run_time.isoformat()) for r in expected
    ]
    nightly = next(row for row in rows if row["job_id"] == "nightly")
    assert nightly["error"]["type"] == "RuntimeError"
    assert nightly["error"]["message"] == "nightly: \x1b]0;PWNED\x07 the disk is full"
    assert "raise RuntimeError" in nightly["error"]["traceback"]
    assert set(nightly["holder"]) == {"host", "pid", "instance"} and nightly["holder"]["pid"] > 0
    assert isinstance(nightly["duration"], float) and nightly["duplicate"] is False
    submitted, finished = (dt.datetime.fromisoformat(nightly[key]) for key in ("submitted_at", "finished_at"))
    assert submitted <= finished

    only_ticker = json.loads(run(mongodb_uri, database, "history", "ticker", "--json").stdout)
    assert {row["job_id"] for row in only_ticker} == {"ticker"} and len(only_ticker) == RUNS["ticker"]

    def listed(*args: str) -> list[dict[str, Any]]:
        return list(json.loads(run(mongodb_uri, database, "history", "--json", *args).stdout))

    failed = listed("--failed")
    assert sorted((row["job_id"], row["outcome"]) for row in failed) == [
        ("late", "missed"), ("nightly", "error")
    ]  # fmt: skip
    assert len(listed("--since", "1h")) == len(rows)
    assert listed("--since", "2099-01-01T00:00") == []
    assert len(listed("--limit", "2")) == 2

    table = run(mongodb_uri, database, "history", "--tz", "Europe/Berlin").stdout
    assert "fire time (Europe/Berlin)" in table and "+01:00" in table
    assert "RuntimeError: nightly: \\x1b]0;PWNED\\x07 the disk is full" in table  # escaped, not sent
    assert "\x1b]0" not in table and f"{len(rows)} runs" in table

    status = run(mongodb_uri, database, "status").stdout
    executed = RUNS["ticker"]
    assert f"{len(rows)} ({executed} executed, 1 errors, 1 missed, 0 skipped)" in status
    assert f"{expected[0].holder.instance} {len(rows)}" in status  # type: ignore[union-attr]


def test_duplicates_and_mistakes(mongodb_uri: str, mongo_client: MongoClient[Any], database: str) -> None:
    missing = run(mongodb_uri, database, "history", check=False)
    assert missing.returncode == 2 and "there is no collection" in missing.stderr  # no jobs collection yet
    mongo_client[database].jobs.insert_one({"_id": "placeholder", "next_run_time": None})
    no_history = run(mongodb_uri, database, "history", check=False)
    assert no_history.returncode == 2
    assert f"there is no history collection {database}.jobs_runs: create the store with history=True" in (
        no_history.stderr
    )  # fmt: skip
    assert "runs (last hour)" in run(mongodb_uri, database, "status").stdout  # says there is none
    store = record_some_runs(mongo_client, database)
    first = mongo_client[database].jobs_runs.find_one({"job_id": "nightly"})
    assert first is not None
    # another process ran the same fire time: its record is kept as a duplicate
    other = {"host": "other", "pid": 7, "instance": "other:7:x"}
    mongo_client[database].jobs_runs.insert_one({**first, "_id": "again", "copy": 1, "duplicate": True,
                                                 "holder": other})  # fmt: skip
    rows = json.loads(run(mongodb_uri, database, "history", "--duplicates", "--json").stdout)
    assert [(row["job_id"], row["duplicate"], row["holder"]["instance"]) for row in rows] == [
        ("nightly", False, first["holder"]["instance"]), ("nightly", True, "other:7:x")
    ]
    assert "1 duplicate" in run(mongodb_uri, database, "status").stdout
    assert "(duplicate)" in run(mongodb_uri, database, "history", "--duplicates").stdout
    bad_since = run(mongodb_uri, database, "history", "--since", "yesterday", check=False)
    assert bad_since.returncode == 2 and "--since takes a duration (30m, 1h, 2d, 1w)" in bad_since.stderr
    assert store.get_job_history(duplicates=True)[1].duplicate is True


def test_hostile_records_are_shown_escaped_and_never_break_the_command(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    record_some_runs(mongo_client, database)
    when = dt.datetime.now(UTC).timestamp()
    hostile = [
        {"job_id": "\x1b[2J\u202eevil", "scheduled_run_time": when, "outcome": "error",
         "error": {"type": "\x1b]0;T\x07", "message": "\x9b5m" * 3, "traceback": ["not", "text"]},
         "holder": {"host": "\x1b[8m", "pid": "x", "instance": "\x1b[3A"}},
        {"job_id": "odd-types", "scheduled_run_time": when, "outcome": 5,
         "holder": "nobody", "duration": "long", "submitted_at": "now", "duplicate": "yes"},
        {"job_id": ["a"], "scheduled_run_time": when, "outcome": None, "error": 3,
         "holder": {"instance": {}}},
    ]  # fmt: skip
    mongo_client[database].jobs_runs.insert_many(hostile)
    table = run(mongodb_uri, database, "history").stdout
    assert "\x1b" not in table and "\x9b" not in table and "\u202e" not in table
    assert "\\x1b[2J\\u202eevil" in table and "\\x1b[3A" in table
    rows = json.loads(run(mongodb_uri, database, "history", "--json").stdout)
    assert all(set(row) == KEYS for row in rows)
    by_id = {row["job_id"]: row for row in rows}
    assert by_id["\x1b[2J\u202eevil"]["error"] == {"type": "\x1b]0;T\x07", "message": "\x9b5m" * 3,
                                                    "traceback": "<list ['not', 'text']>"}  # fmt: skip
    assert by_id["odd-types"]["outcome"] == "unknown" and by_id["odd-types"]["holder"] is None
    assert by_id["<list ['a']>"]["error"] is None
    status = run(mongodb_uri, database, "status").stdout
    assert "\x1b" not in status and "2 malformed" in status and "\\x1b[3A 1" in status
