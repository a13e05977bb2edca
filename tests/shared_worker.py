"""A scheduler process on a shared store, for the tests and the benchmarks.

``python -m tests.shared_worker URI DATABASE SECONDS [LEASE] [MODE] [options]`` (``MODE``:
``shared``, the default, or ``plain`` for the single-scheduler store). Every execution is recorded,
once the job has run, in the ``executions`` collection, whose unique index on (job, run_time) turns
a second execution of the same fire time into a recorded duplicate; every miss APScheduler reports
(``EVENT_JOB_MISSED``) goes to ``missed``, and every run skipped because the job's earlier run was
still going (``EVENT_JOB_MAX_INSTANCES``) to ``skipped``. At exit the durations of the scheduler's loops
(APScheduler's ``_process_jobs``) and the server commands the store's client sent are written to
``loops``.

Options:

- ``--forks N``: build the store in this process, then ``os.fork()`` N children that each start a
  scheduler on it (the way gunicorn ``--preload`` shares what the master built);
- ``--client-before-fork``: with ``--forks``, pass the store a MongoClient created before the fork;
- ``--register N --interval S``: at start, register N interval jobs with fixed ids
  (``add_job(..., replace_existing=True)``), as a web app does in every worker;
- ``--work S``: each run of a registered job sleeps S seconds;
- ``--apscheduler-defaults``: APScheduler's own job defaults (``misfire_grace_time=1``,
  ``coalesce=True``) instead of the tests' (``None``, ``False``, ``max_instances=5``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from jobshelf import MongoDBJobStore

#: Commands that are not the store's work (connection upkeep).
IGNORED_COMMANDS = frozenset(
    {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo", "saslStart", "saslContinue"}
)


def work(seconds: float = 0.0) -> None:
    """The job: it sleeps ``seconds``; its execution is what is recorded."""
    if seconds:
        time.sleep(seconds)


class CommandCounter(monitoring.CommandListener):
    """Counts the server commands a client sends, by name (pymongo's command monitoring)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in IGNORED_COMMANDS:
            with self._lock:
                self.counts[event.command_name] = self.counts.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


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


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.shared_worker")
    parser.add_argument("uri")
    parser.add_argument("database")
    parser.add_argument("seconds", type=float)
    parser.add_argument("lease", type=float, nargs="?", default=2.0)
    parser.add_argument("mode", nargs="?", default="shared", choices=["shared", "plain"])
    parser.add_argument("--forks", type=int, default=0)
    parser.add_argument("--client-before-fork", action="store_true")
    parser.add_argument("--register", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--apscheduler-defaults", action="store_true")
    parser.add_argument("--log", default="", help="log at this level (DEBUG, INFO...) to stderr")
    return parser.parse_args(argv)


def build_store(args: argparse.Namespace, counter: CommandCounter | None = None) -> MongoDBJobStore:
    shared = args.mode == "shared"
    options: dict[str, Any] = {"shared": shared, "lease": args.lease} if shared else {}
    if args.client_before_fork:
        options["client"] = MongoClient(args.uri)
    else:
        options["host"] = args.uri
        if counter is not None:
            options["event_listeners"] = [counter]
    return MongoDBJobStore(database=args.database, **options)


def run_scheduler(args: argparse.Namespace, store: MongoDBJobStore, counter: CommandCounter | None) -> None:
    """Start a scheduler on ``store``, record what runs, stop after ``args.seconds`` (or SIGTERM)."""
    client: MongoClient[Any] = MongoClient(args.uri)  # the records' own client, made in this process
    executions = client[args.database].executions
    duplicates = client[args.database].duplicates
    missed = client[args.database].missed
    skipped = client[args.database].skipped
    me = f"{socket.gethostname()}:{os.getpid()}"

    def record(event: Any) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            skipped.insert_many(
                [{"job": event.job_id, "run_time": t.timestamp(), "at": time.time(), "by": me}
                 for t in event.scheduled_run_times]
            )  # fmt: skip
            return
        document = {"job": event.job_id, "run_time": event.scheduled_run_time.timestamp(), "at": time.time(),
                    "by": me}  # fmt: skip
        if event.code == EVENT_JOB_MISSED:
            missed.insert_one(document)
            return
        try:
            executions.insert_one(document)
        except DuplicateKeyError:
            document.pop("_id", None)
            duplicates.insert_one(document)

    defaults = (
        {}
        if args.apscheduler_defaults
        else {"misfire_grace_time": None, "coalesce": False, "max_instances": 5}
    )
    scheduler = TimedScheduler(timezone=dt.timezone.utc, jobstores={"default": store}, job_defaults=defaults)
    # before the store's own listener: record, then release
    scheduler.add_listener(record, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    for index in range(args.register):  # as a web app registers its jobs in every worker
        scheduler.add_job(work, "interval", seconds=args.interval, args=(args.work,), id=f"reg{index:02}",
                          replace_existing=True)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    print("started", flush=True)
    stop.wait(args.seconds)
    scheduler.shutdown(wait=True)
    client[args.database].loops.insert_one({"by": me, "mode": args.mode, "seconds": scheduler.loop_seconds,
                                            "commands": counter.snapshot() if counter else {}})  # fmt: skip
    client.close()
    print("stopped", flush=True)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.log:
        line = "%(created).3f %(process)d %(name)s %(levelname)s %(message)s"
        logging.basicConfig(level=args.log, format=line)
        logging.getLogger("pymongo").setLevel(logging.WARNING)
    counter = CommandCounter()
    if not args.forks:
        run_scheduler(args, build_store(args, counter), counter)
        return 0
    store = build_store(args)  # built before the fork, started in each child
    children = []
    for _ in range(args.forks):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_scheduler(args, store, None)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    print("children", codes, flush=True)
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
