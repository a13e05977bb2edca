"""A scheduler process on a shared store, for the tests and the benchmarks.

``python -m tests.shared_worker URI DATABASE SECONDS [LEASE] [MODE]`` (``MODE``: ``shared``, the
default, or ``plain`` for the single-scheduler store). Every execution is recorded, once the job has
run, in the ``executions`` collection, whose unique index on (job, run_time) turns a second
execution of the same fire time into a recorded duplicate. At exit the durations of the scheduler's
loops (APScheduler's ``_process_jobs``) are written to the ``loops`` collection.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from jobshelf import MongoDBJobStore


def work() -> None:
    """The job: nothing to do; its execution is what is recorded."""


class TimedScheduler(BackgroundScheduler):  # type: ignore[misc]
    """Times each pass of APScheduler's own loop (the store cannot tell from inside)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.loop_seconds: list[float] = []

    def _process_jobs(self) -> Any:
        started = time.perf_counter()
        try:
            return super()._process_jobs()
        finally:
            self.loop_seconds.append(time.perf_counter() - started)


def main(uri: str, database: str, seconds: float, lease: float = 2.0, mode: str = "shared") -> None:
    client: MongoClient[Any] = MongoClient(uri)
    executions = client[database].executions
    duplicates = client[database].duplicates
    me = f"{socket.gethostname()}:{os.getpid()}"

    def record(event: Any) -> None:
        document = {
            "job": event.job_id,
            "run_time": event.scheduled_run_time.timestamp(),
            "at": time.time(),
            "by": me,
        }
        try:
            executions.insert_one(document)
        except DuplicateKeyError:
            document.pop("_id", None)
            duplicates.insert_one(document)

    store = MongoDBJobStore(database=database, client=client, shared=mode == "shared", lease=lease)
    scheduler = TimedScheduler(
        timezone=dt.timezone.utc,
        jobstores={"default": store},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 5},
    )
    scheduler.add_listener(record, EVENT_JOB_EXECUTED)  # before the store's own: record, then release
    scheduler.start()
    print("started", flush=True)
    time.sleep(seconds)
    scheduler.shutdown(wait=True)
    client[database].loops.insert_one({"by": me, "mode": mode, "seconds": scheduler.loop_seconds})
    client.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), *(float(a) for a in sys.argv[4:5]), *sys.argv[5:6])
