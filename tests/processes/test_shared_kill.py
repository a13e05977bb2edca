"""Shared mode with real scheduler processes (tests/shared_worker.py, lease 2 s): each fire time
runs once, a SIGKILLed process's jobs carry on elsewhere, a job added by a short-lived process
runs on time."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from ..helpers import UTC, lease_covers, make_job
from ..shared_worker import work
from .test_shared_processes import prepare

pytestmark = pytest.mark.subprocess


def start_workers(uri: str, database: str, count: int, seconds: float, lease: float = 2.0) -> list[Any]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.shared_worker", uri, database, str(seconds), str(lease)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]


def pending(db: Any, pid: int) -> list[tuple[str, float]]:
    """The fire times the process holds and has not released (the jobs fire every 0.5 s): those its
    leases cover once written back, and the due fire time of a claim not written back yet (the
    executor may have run it already: the scheduler submits before it writes the job back)."""
    found = db.jobs.find({"lease.holder": {"$regex": f":{pid}:"}, "lease.until": {"$gt": 0}})
    return sorted(run for document in found for run in lease_covers(document, 0.5))


def recorded(db: Any, fire_times: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Those of ``fire_times`` whose run is recorded (a run is recorded before its lease is
    released: recorded and still pending is the at-least-once window the README documents, where a
    crash means that fire time runs again elsewhere)."""
    done = {(e["job"], round(e["run_time"], 6)) for e in db.executions.find({}, ["job", "run_time"])}
    return [(job, round(t, 6)) for job, t in fire_times if (job, round(t, 6)) in done]


def kill_outside_the_window(db: Any, process: Any) -> list[tuple[str, float]]:
    """SIGKILL the process at a moment it is outside the at-least-once window; return the fire
    times it had pending then."""
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        held = pending(db, process.pid)
        if not recorded(db, held):
            process.send_signal(signal.SIGKILL)
            return held
        process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the process never left the window")


def test_processes_run_each_fire_time_once_and_survive_a_kill(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    db, store, setup = prepare(mongo_client, database)
    start = dt.datetime.now(UTC) + dt.timedelta(seconds=4)
    for index in range(20):
        trigger = IntervalTrigger(seconds=0.5, start_date=start)
        store.add_job(make_job(setup, f"job{index:02}", func=work, trigger=trigger, next_run_time=start,
                               misfire_grace_time=None, max_instances=5))  # fmt: skip
    workers = start_workers(mongodb_uri, database, 3, seconds=20)
    time.sleep(9)  # about 5 s of firing
    victim = workers[0]
    held = kill_outside_the_window(db, victim)
    killed_at = time.time()
    for worker in workers:
        worker.wait(60)
    stopped_at = time.time()
    assert [worker.returncode for worker in workers] == [-signal.SIGKILL, 0, 0]

    executions = list(db.executions.find())
    # no fire time ran twice, unless a record the process had sent before it was stopped landed
    # after the check: it was in the window after all
    duplicates = [(d["job"], d["run_time"]) for d in db.duplicates.find()]
    assert {(job, round(t, 6)) for job, t in duplicates} <= set(recorded(db, held)), (duplicates, held)
    seen = {(e["job"], round(e["run_time"], 3)) for e in executions}
    missing = []
    for index in range(20):
        fire_time = start.timestamp()
        while fire_time < stopped_at - 5:  # the last seconds may be cut by the shutdown
            if (f"job{index:02}", round(fire_time, 3)) not in seen:
                missing.append((index, fire_time - start.timestamp()))
            fire_time += 0.5
    assert missing == []
    assert len(executions) >= 20 * 16
    by_victim = [e for e in executions if e["by"].endswith(f":{victim.pid}")]
    assert by_victim, "the killed process ran nothing before it was killed"
    after_kill = {e["job"] for e in executions if e["run_time"] > killed_at + 3}
    assert after_kill == {f"job{index:02}" for index in range(20)}  # all carry on elsewhere


def add_one_date_job(uri: str, database: str, run_at: float) -> None:
    """Run in a short-lived process: add a date job and exit at once."""
    client: MongoClient[Any] = MongoClient(uri)
    store = MongoDBJobStore(database=database, client=client)
    scheduler = BackgroundScheduler(timezone=UTC)
    store.start(scheduler, "adder")
    store.add_job(
        make_job(scheduler, "date-job", func=work, next_run_time=dt.datetime.fromtimestamp(run_at, UTC))
    )
    client.close()


def test_a_job_added_by_a_short_lived_process_runs_on_time(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    db, store, setup = prepare(mongo_client, database)
    in_an_hour = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    hourly = IntervalTrigger(hours=1, start_date=in_an_hour)
    store.add_job(make_job(setup, "hourly", func=work, trigger=hourly, next_run_time=in_an_hour))
    workers = start_workers(mongodb_uri, database, 3, seconds=12)
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "started"
    time.sleep(2)  # every scheduler now sleeps until the hourly job, an hour away
    run_at = time.time() + 3
    adder = subprocess.run(
        [sys.executable, "-c", f"from tests.processes.test_shared_kill import add_one_date_job as a; "
                               f"a({mongodb_uri!r}, {database!r}, {run_at!r})"],
        timeout=60, check=True,
    )  # fmt: skip
    assert adder.returncode == 0
    for worker in workers:
        worker.wait(60)
    (execution,) = list(db.executions.find({"job": "date-job"}))
    assert abs(execution["run_time"] - run_at) < 1e-3
    assert execution["at"] - run_at < 1.0, execution["at"] - run_at
    assert db.duplicates.count_documents({}) == 0
    assert db.jobs.find_one({"_id": "date-job"}) is None  # a date job is removed after its run
