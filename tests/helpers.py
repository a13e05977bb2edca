"""Jobs, callables and comparisons shared by the tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore as ApschedulerMemoryJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from jobshelf import MemoryJobStore, MongoDBJobStore
from jobshelf.testing import state_difference

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
CALLS: list[Any] = []

#: The stores the shared tests run on (a Union, not ``X | Y``: evaluated at run time on 3.9 too).
AnyStore = Union[MongoDBJobStore, MemoryJobStore]
StoreFactory = Callable[..., AnyStore]


def at(minutes: int) -> dt.datetime:
    """``T0`` plus some minutes: fixed instants far in the future."""
    return T0 + dt.timedelta(minutes=minutes)


def fuzz_examples(default: int = 300) -> int:
    """Inputs per fuzz property: ``JOBSHELF_FUZZ_EXAMPLES`` (``make fuzz FUZZ_EXAMPLES=N`` sets it).

    Every test marked ``@pytest.mark.fuzz`` reads its count here, so ``make fuzz`` scales them all.
    """
    return int(os.environ.get("JOBSHELF_FUZZ_EXAMPLES", str(default)))


# ----------------------------------------------------------------------------- waiting, with deadlines


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Check ``condition`` until it holds or ``timeout`` seconds pass; whether it held.

    For state that announces no event (a document in the database). Job runs have events: use
    ``RunLog`` or ``loop_is_alive`` instead.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
    return True


class RunLog:
    """Counts of job runs, by name, that a test can wait on: each run wakes the waiters."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._counts: Counter[str] = Counter()

    def record(self, name: str, *_ignored: Any) -> None:
        """A job's callable (or its first statement): one run of ``name``."""
        with self._changed:
            self._counts[name] += 1
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._counts.clear()

    def __getitem__(self, name: str) -> int:
        with self._changed:
            return self._counts[name]

    def counts(self) -> dict[str, int]:
        with self._changed:
            return dict(self._counts)

    def wait_until(self, condition: Callable[[Counter[str]], bool], timeout: float) -> bool:
        """Whether ``condition(counts)`` held within ``timeout`` seconds (checked at each run)."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self._counts), timeout)


PROBE_STORE = "loop-probe"


def loop_is_alive(scheduler: Any, timeout: float = 10.0) -> bool:
    """Whether the scheduler's loop runs a job submitted now, within ``timeout`` seconds.

    The job goes to an in-process APScheduler store of its own (added on first use), so the
    store under test is not touched: a loop whose thread died, or that is stuck, never runs it.
    Each call needs a loop pass that starts after it, so N calls in a row span N passes.
    """
    with contextlib.suppress(ValueError):  # added by an earlier call
        scheduler.add_jobstore(ApschedulerMemoryJobStore(), PROBE_STORE)
    ran = threading.Event()
    probe = f"probe-{uuid.uuid4().hex}"
    now = dt.datetime.now(UTC)
    scheduler.add_job(ran.set, "date", run_date=now, id=probe, jobstore=PROBE_STORE, misfire_grace_time=None)
    # Also wait for the pass to remove the probe: a shutdown() in the middle of that pass makes
    # APScheduler's own remove_job raise in its thread.
    return ran.wait(timeout) and wait_for(lambda: scheduler.get_job(probe, PROBE_STORE) is None, timeout)


def dummy_job(*args: Any, **kwargs: Any) -> None:
    """An importable callable for jobs under test."""
    CALLS.append((args, kwargs))


class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def make_job(
    scheduler: Any,
    job_id: str = "job1",
    *,
    next_run_time: dt.datetime | None = dt.datetime(2030, 1, 1, tzinfo=UTC),
    trigger: BaseTrigger | None = None,
    func: Any = dummy_job,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Job:
    """A job as ``scheduler.add_job`` builds it, not yet added to a store."""
    if trigger is None:
        trigger = DateTrigger(next_run_time or dt.datetime(2030, 1, 1, tzinfo=UTC))
    settings: dict[str, Any] = {
        "func": func,
        "trigger": trigger,
        "executor": "default",
        "args": tuple(args) if isinstance(args, list) else args,
        "kwargs": kwargs or {},
        "misfire_grace_time": 1,
        "coalesce": False,
        "max_instances": 1,
        "next_run_time": next_run_time,
    }
    settings.update(options)
    return Job(scheduler, id=job_id, **settings)


def assert_same_job(expected: Job, actual: Job | None) -> None:
    """Job state equal exactly (types included) and the same next fire times."""
    assert actual is not None, f"job {expected.id!r} was not returned"
    difference = state_difference(expected.__getstate__(), actual.__getstate__())
    assert difference is None, difference
    now = expected.next_run_time or dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert expected.trigger.get_next_fire_time(None, now) == actual.trigger.get_next_fire_time(None, now)


# ----------------------------------------------------------------------------- web servers, shared mode
# tests/processes/test_shared_gunicorn.py and test_shared_servers.py run real servers whose
# workers each run a shared scheduler (tests/shared_wsgi.py, shared_asgi.py, shared_uwsgi.py): five jobs,
# reg00..reg04, every second; each run recorded in ``executions`` under a unique index on (job,
# run_time), a second run of a fire time in ``duplicates``.

ROOT = Path(__file__).resolve().parents[1]
#: One run of a job: (job id, fire time as a UTC timestamp).
Run = tuple[str, float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live_holders(store: MongoDBJobStore) -> list[Any]:
    """The liveness records (``store.holders()``) of the holders judged alive."""
    return [record for record in store.holders() if record.alive]


def prepare_records(client: MongoClient[Any], database: str) -> tuple[Database[Any], MongoDBJobStore]:
    """The test's database, its ``executions`` unique on (job, run_time), and a store (not started)
    that reads the workers' liveness records."""
    db = client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    return db, MongoDBJobStore(database=database, client=client, shared=True)


def server_env(uri: str, database: str, log: str = "INFO") -> dict[str, str]:
    """The environment the app modules read their configuration from (``log``: their logging
    level, written to the server's output)."""
    return {**os.environ, "JOBSHELF_TEST_URI": uri, "JOBSHELF_TEST_DB": database, "JOBSHELF_TEST_LOG": log}


@dataclass
class Server:
    process: subprocess.Popen[str]
    output: str = ""


@contextlib.contextmanager
def running_server(
    command: list[str], env: dict[str, str], stop: int = signal.SIGTERM, timeout: float = 60.0
) -> Iterator[Server]:
    """Run ``command`` (in the project's root, its own process group, its output to a temporary
    file); at the end of the block send it ``stop`` and wait for it to exit (after ``timeout``
    seconds its whole group is killed), then read its output into ``Server.output``."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, text=True,
                                   start_new_session=True)  # fmt: skip
        server = Server(process)
        failed = False
        try:
            yield server
        except BaseException:
            failed = True
            raise
        finally:
            if process.poll() is None:
                process.send_signal(stop)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.seek(0)
            server.output = log.read()
            if failed:  # shown with the failure
                print(f"{command[:3]}... exited with {process.returncode}:\n{server.output[-5000:]}")


def registered_schedule(db: Database[Any], jobs: int = 5, timeout: float = 10) -> dict[str, float]:
    """Each registered job's first fire time, as the first registration wrote it (a worker checks
    in before it writes the jobs: wait for them)."""
    assert wait_for(lambda: db.jobs.count_documents({}) == jobs, timeout), list(db.jobs.find({}, ["_id"]))
    first = {d["_id"]: d["next_run_time"] for d in db.jobs.find({}, ["next_run_time"])}
    assert sorted(first) == [f"reg{index:02}" for index in range(jobs)], first
    return first


def lease_covers(document: dict[str, Any], interval: float) -> set[Run]:
    """The fire times a job document's lease covers, for a job firing every ``interval`` seconds:
    from its ``pending`` fire time (the earliest going on in the holder) up to its next run time,
    which a takeover runs again; or, claimed and not yet written back, its next run time."""
    pending, next_run_time = document["lease"].get("pending"), document["next_run_time"]
    if pending is None:
        return {(document["_id"], next_run_time)}
    count = max(1, round((next_run_time - pending) / interval))
    return {(document["_id"], round(pending + k * interval, 6)) for k in range(count)}


def runs_in_flight(db: Database[Any], holder: str, interval: float = 1.0) -> set[Run]:
    """The (job, fire time) runs ``holder`` has claimed and not released (see ``lease_covers``)."""
    return {run for d in db.jobs.find({"lease.holder": holder}) for run in lease_covers(d, interval)}


def kill_holder(db: Database[Any], holder: Any) -> set[Run]:
    """SIGKILL the worker process of ``holder`` (a liveness record); return the runs it had in
    flight, read while it was stopped (SIGSTOP), so that it claimed nothing after the read."""
    assert holder.pid is not None, holder
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        return runs_in_flight(db, holder.holder)
    finally:
        os.kill(holder.pid, signal.SIGKILL)


def assert_each_fire_time_ran(
    db: Database[Any], first: dict[str, float], began: float, stopping: float, *, may_repeat: set[Run],
    output: str = "",
) -> None:  # fmt: skip
    """Every fire time of every job between ``began`` and ``stopping`` ran, on the grid of the first
    registration's schedule (``first``); only the runs in ``may_repeat`` ran twice. A failure shows
    the end of the server's ``output`` (its workers' logs)."""
    try:
        _check_fire_times(db, first, began, stopping, may_repeat)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- the server's output, last part ---\n{output[-12000:]}") from exc


def _check_fire_times(
    db: Database[Any], first: dict[str, float], began: float, stopping: float, may_repeat: set[Run]
) -> None:
    executions = list(db.executions.find())
    done = {(e["job"], round(e["run_time"], 3)) for e in executions}
    for job_id, first_time in first.items():
        assert all(abs((e["run_time"] - first_time) - round(e["run_time"] - first_time)) < 1e-3
                   for e in executions if e["job"] == job_id)  # fmt: skip
        fire_time = first_time
        while fire_time < stopping:
            if fire_time > began:
                assert (job_id, round(fire_time, 3)) in done, (job_id, fire_time - began)
            fire_time += 1
    duplicates = {(d["job"], round(d["run_time"], 6)) for d in db.duplicates.find()}
    assert duplicates <= {(job, round(t, 6)) for job, t in may_repeat}, (duplicates, may_repeat)


# ----------------------------------------------------------------------------- raw documents
# What another program (the stock store, an attacker, a corrupted write) leaves in the storage.


def insert_document(store: Any, document: dict[str, Any]) -> None:
    """Write a document as it is, behind the store's back, on either adapter."""
    from bson.binary import Binary

    if isinstance(store, MongoDBJobStore):
        stored = {key: Binary(value) if type(value) is bytes else value for key, value in document.items()}
        store.collection.insert_one(stored)
    else:
        store.storage.insert(document)


def find_document(store: Any, job_id: Any) -> dict[str, Any] | None:
    """The stored document, as it is, on either adapter."""
    if isinstance(store, MongoDBJobStore):
        document: dict[str, Any] | None = store.collection.find_one({"_id": job_id})
        return document
    return store.storage.find(job_id)  # type: ignore[no-any-return]


def document_ids(store: Any) -> list[Any]:
    """Every stored id, sorted, quarantined ones included."""
    if isinstance(store, MongoDBJobStore):
        return sorted(document["_id"] for document in store.collection.find({}, ["_id"]))
    return sorted(document["_id"] for document in store.storage.documents())


# ----------------------------------------------------------------------------- audit events

#: Audit events that mean code from the data could run: an import, code compiled or executed,
#: a process started, a class looked up by an unpickler.
DANGEROUS_EVENTS = frozenset(
    ("import", "exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
     "subprocess.Popen", "pickle.find_class")
)  # fmt: skip
_AUDIT: dict[str, Any] = {"installed": False, "watching": False, "events": []}


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["watching"] and event in DANGEROUS_EVENTS:
        _AUDIT["events"].append((event, str(args[0])[:200] if args else ""))


class audit_events:
    """Record the dangerous audit events raised inside the ``with`` block (this thread or any)."""

    def __enter__(self) -> list[tuple[str, str]]:
        import sys

        if not _AUDIT["installed"]:
            sys.addaudithook(_audit_hook)  # hooks cannot be removed: one, switched on and off
            _AUDIT["installed"] = True
        _AUDIT["events"] = []
        _AUDIT["watching"] = True
        return _AUDIT["events"]  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        _AUDIT["watching"] = False
