"""An ASGI app that runs a shared scheduler, the way a web app under uvicorn ``--workers N`` does
(tests/processes/test_shared_servers.py). Its configuration comes from the environment:
``JOBSHELF_TEST_URI`` and ``JOBSHELF_TEST_DB``.

A plain ASGI callable (no framework): the lifespan startup builds the store and the scheduler,
registers five jobs with fixed ids and starts it; the lifespan shutdown shuts it down. Runs are
recorded as tests/shared_wsgi.py records them: in ``executions``, under a unique index on (job,
run_time), a second run of a fire time going to ``duplicates``. ``build_scheduler()`` is also
what tests/shared_uwsgi.py builds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from jobshelf import MongoDBJobStore

from .shared_worker import work

URI = os.environ.get("JOBSHELF_TEST_URI", "mongodb://127.0.0.1:27017")
DATABASE = os.environ.get("JOBSHELF_TEST_DB", "jobshelf_asgi")
JOBS = 5

if os.environ.get("JOBSHELF_TEST_LOG"):  # the tests read the workers' logs when a check fails
    logging.basicConfig(level=os.environ["JOBSHELF_TEST_LOG"],
                        format="%(created).3f %(process)d %(name)s %(levelname)s %(message)s")  # fmt: skip
    logging.getLogger("pymongo").setLevel(logging.WARNING)


def build_scheduler() -> BackgroundScheduler:
    """A scheduler on a shared store, with the five jobs every worker registers, and its runs
    recorded. Not started."""
    store = MongoDBJobStore(host=URI, database=DATABASE, shared=True)
    scheduler = BackgroundScheduler(
        timezone=dt.timezone.utc,
        jobstores={"default": store},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 5},
    )
    scheduler.add_listener(_record, EVENT_JOB_EXECUTED)
    for index in range(JOBS):  # every worker registers the same jobs; the first registration writes
        scheduler.add_job(work, "interval", seconds=1, args=(0.3,), id=f"reg{index:02}",
                          replace_existing=True)  # fmt: skip
    return scheduler


def stop(scheduler: BackgroundScheduler) -> None:
    if scheduler.running:
        scheduler.shutdown(wait=True)


def _record(event: Any) -> None:
    client = _records()
    document = {"job": event.job_id, "run_time": event.scheduled_run_time.timestamp(), "at": time.time(),
                "by": f"{socket.gethostname()}:{os.getpid()}"}  # fmt: skip
    try:
        client[DATABASE].executions.insert_one(document)
    except DuplicateKeyError:
        document.pop("_id", None)
        client[DATABASE].duplicates.insert_one(document)


_clients: dict[int, MongoClient[Any]] = {}


def _records() -> MongoClient[Any]:
    """The records' own client, one per process (made after any fork)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = MongoClient(URI)
    return _clients[pid]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_running: list[BackgroundScheduler] = []


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    scheduler = build_scheduler()
                    scheduler.start()
                except Exception as exc:  # uvicorn --lifespan on: the worker fails to start
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                _running.append(scheduler)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for scheduler in _running:  # waits for the runs going on, off the event loop
                    await asyncio.get_running_loop().run_in_executor(None, stop, scheduler)
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})
