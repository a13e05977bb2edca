"""A WSGI app that runs a shared scheduler, the way a web app under gunicorn does (the gunicorn
test). Its configuration comes from the environment: ``JOBSHELF_TEST_URI`` and
``JOBSHELF_TEST_DB``.

At import (in gunicorn's master, with ``--preload``) it builds the store and the scheduler and
registers five jobs with fixed ids; ``start()`` starts the scheduler (gunicorn's ``post_fork``,
in each worker) and ``stop()`` shuts it down (``worker_exit``). Runs are recorded as
tests/shared_worker.py records them.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from jobshelf import MongoDBJobStore

from .shared_worker import work

URI = os.environ.get("JOBSHELF_TEST_URI", "mongodb://127.0.0.1:27017")
DATABASE = os.environ.get("JOBSHELF_TEST_DB", "jobshelf_wsgi")

store = MongoDBJobStore(host=URI, database=DATABASE, shared=True)  # built before the fork
scheduler = BackgroundScheduler(
    timezone=dt.timezone.utc,
    jobstores={"default": store},
    job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 5},
)
for index in range(5):  # every worker registers the same jobs
    scheduler.add_job(work, "interval", seconds=1, args=(0.3,), id=f"reg{index:02}", replace_existing=True)


def _record(event: Any) -> None:
    client: MongoClient[Any] = _records()
    document = {"job": event.job_id, "run_time": event.scheduled_run_time.timestamp(), "at": time.time(),
                "by": f"{socket.gethostname()}:{os.getpid()}"}  # fmt: skip
    try:
        client[DATABASE].executions.insert_one(document)
    except DuplicateKeyError:
        document.pop("_id", None)
        client[DATABASE].duplicates.insert_one(document)


_clients: dict[int, MongoClient[Any]] = {}


def _records() -> MongoClient[Any]:
    """The records' own client, one per process (made after the fork)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = MongoClient(URI)
    return _clients[pid]


def start() -> None:
    scheduler.add_listener(_record, EVENT_JOB_EXECUTED)
    scheduler.start()


def stop() -> None:
    if scheduler.running:
        scheduler.shutdown(wait=True)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
