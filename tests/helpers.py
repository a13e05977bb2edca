"""Jobs, callables and comparisons shared by the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from jobshelf.testing import state_difference

UTC = dt.timezone.utc
CALLS: list[Any] = []


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

    from jobshelf import MongoDBJobStore

    if isinstance(store, MongoDBJobStore):
        stored = {key: Binary(value) if type(value) is bytes else value for key, value in document.items()}
        store.collection.insert_one(stored)
    else:
        store.storage.insert(document)


def find_document(store: Any, job_id: Any) -> dict[str, Any] | None:
    """The stored document, as it is, on either adapter."""
    from jobshelf import MongoDBJobStore

    if isinstance(store, MongoDBJobStore):
        document: dict[str, Any] | None = store.collection.find_one({"_id": job_id})
        return document
    return store.storage.find(job_id)  # type: ignore[no-any-return]


def document_ids(store: Any) -> list[Any]:
    """Every stored id, sorted, quarantined ones included."""
    from jobshelf import MongoDBJobStore

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
