"""Jobs, callables and comparisons shared by the tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Union

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore as ApschedulerMemoryJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

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
