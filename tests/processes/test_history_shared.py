"""Execution history in shared mode: three real scheduler processes on one store write exactly one
record per fire time (no process is killed, so no fire time is in the crash window).

``python -m tests.processes.test_history_shared URI DATABASE SECONDS`` is one of those processes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from ..helpers import UTC, make_job


def work() -> None:
    """The job: nothing; its record is what the test reads."""


def worker(uri: str, database: str, seconds: float) -> None:
    client: MongoClient[Any] = MongoClient(uri)
    store = MongoDBJobStore(database=database, client=client, shared=True, lease=2, history=True)
    scheduler = BackgroundScheduler(
        timezone=UTC, jobstores={"default": store},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 5},
    )  # fmt: skip
    scheduler.start()
    print(f"holder {store.holder}", flush=True)
    time.sleep(seconds)
    print(f"stopping {time.time()!r}", flush=True)
    scheduler.shutdown(wait=True)  # writes this process's last records
    client.close()


@pytest.mark.subprocess
def test_three_shared_processes_write_one_record_per_fire_time(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, history=True)
    setup = BackgroundScheduler(timezone=UTC)
    store.start(setup, "setup")
    start = dt.datetime.now(UTC) + dt.timedelta(seconds=4)
    for index in range(10):
        trigger = IntervalTrigger(seconds=0.5, start_date=start)
        store.add_job(make_job(setup, f"job{index}", func=work, trigger=trigger, next_run_time=start,
                               misfire_grace_time=None, max_instances=5))  # fmt: skip
    store.shutdown()
    command = [sys.executable, "-m", "tests.processes.test_history_shared", mongodb_uri, database, "12"]
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True}
    workers = [subprocess.Popen(command, **piped) for _ in range(3)]  # type: ignore[call-overload]
    outputs = [process.communicate(timeout=90)[0] for process in workers]
    assert [process.returncode for process in workers] == [0, 0, 0]
    # every fire time well before the first process began to shut down must have run (a loaded
    # machine runs them late, not never)
    stopped_at = min(float(line.split()[1]) for out in outputs for line in out.splitlines()
                     if line.startswith("stopping"))  # fmt: skip

    records = store.get_job_history(limit=100_000)
    assert store.get_job_history(duplicates=True) == []
    assert {record.outcome for record in records} == {"executed"}
    per_fire_time = Counter((record.job_id, record.scheduled_run_time) for record in records)
    assert max(per_fire_time.values()) == 1  # never twice
    expected = set()
    for index in range(10):
        when = start
        while when.timestamp() < stopped_at - 3:
            expected.add((f"job{index}", when))
            when += dt.timedelta(seconds=0.5)
    assert sorted(expected - set(per_fire_time)) == []  # none missing
    assert len(expected) >= 10 * 6
    # each record names the process, and the holder id its leases carry
    holders = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("holder")}
    assert len(holders) == 3
    assert {record.holder.instance for record in records if record.holder is not None} <= holders
    assert {record.holder.pid for record in records if record.holder is not None} <= {p.pid for p in workers}


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], float(sys.argv[3]))
