"""Every field of every document may be wrong: only that document is quarantined (issue 9)."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import threading
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from jobshelf.mongodb import FORMAT_FIELD

from .helpers import (
    UTC,
    RunLog,
    document_ids,
    find_document,
    insert_document,
    loop_is_alive,
    make_job,
    wait_for,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
SERIALIZERS = ["pickle", "msgpack"]


def encoded(store: Any, scheduler: BackgroundScheduler, job_id: str, **changes: Any) -> bytes:
    """A state in the store's own format with some fields changed, as an attacker would write it."""
    state = make_job(scheduler, job_id, next_run_time=T0).__getstate__()
    state.update(changes)
    return store.serializer.dumps(state)  # type: ignore[no-any-return]


WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "next_run_time is a string": {"next_run_time": "x"},
    "naive next_run_time": {"next_run_time": dt.datetime(2030, 1, 1)},
    "args is a list": {"args": [1, 2]},
    "kwargs with int keys": {"kwargs": {1: 2}},
    "max_instances zero": {"max_instances": 0},
    "coalesce is a string": {"coalesce": "yes"},
    "trigger is a string": {"trigger": "cron"},
    "version 2": {"version": 2},
    "misfire_grace_time negative": {"misfire_grace_time": -5},
}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(WRONG_SHAPES))
def test_a_state_of_the_wrong_shape_is_quarantined(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, case: str
) -> None:
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", next_run_time=T0))
    insert_document(store, {"_id": "bad", "next_run_time": T0.timestamp(), FORMAT_FIELD: serializer,
                            "job_state": encoded(store, scheduler, "bad", **WRONG_SHAPES[case])})  # fmt: skip
    assert [job.id for job in store.get_due_jobs(T0)] == ["good"]
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "bad"
    assert "job 'bad' has a malformed state" in quarantined.message


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_document_cannot_pose_as_another_job(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    victim = make_job(scheduler, "victim", next_run_time=T0, args=("real",))
    store.add_job(victim)
    insert_document(store, {"_id": "forged", "next_run_time": T0.timestamp(), FORMAT_FIELD: serializer,
                            "job_state": encoded(store, scheduler, "victim", args=("forged",))})  # fmt: skip
    assert [(job.id, job.args) for job in store.get_due_jobs(T0)] == [("victim", ("real",))]
    assert [q.id for q in store.get_quarantined_jobs()] == ["forged"]
    assert "names another job id, 'victim'" in store.get_quarantined_jobs()[0].message
    assert document_ids(store) == ["forged", "victim"]


MALFORMED_DOCUMENTS: dict[str, dict[str, Any]] = {
    "no job_state": {"next_run_time": T0.timestamp()},
    "job_state is an int": {"next_run_time": T0.timestamp(), "job_state": 5},
    "job_state is a document": {"next_run_time": T0.timestamp(), "job_state": {"a": 1}},
    "format is a list": {"next_run_time": T0.timestamp(), "job_state": b"x", FORMAT_FIELD: ["pickle"]},
    "format is an int": {"next_run_time": T0.timestamp(), "job_state": b"x", FORMAT_FIELD: 3},
    "next_run_time is a string": {"next_run_time": "soon", "job_state": b"x"},
    "next_run_time is a document": {"next_run_time": {"$date": 1}, "job_state": b"x"},
}


@pytest.mark.parametrize("case", list(MALFORMED_DOCUMENTS))
def test_a_malformed_document_does_not_stop_the_store(
    make_store: Any, scheduler: BackgroundScheduler, case: str
) -> None:
    store = make_store()
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", next_run_time=T0))
    insert_document(store, {"_id": "bad", **MALFORMED_DOCUMENTS[case]})
    restarted = make_store()
    restarted.start(scheduler, "default")  # start() reads every format tag
    for reader in (store, restarted):
        assert [job.id for job in reader.get_due_jobs(T0)] == ["good"]
        assert [job.id for job in reader.get_all_jobs()] == ["good"]
        assert reader.lookup_job("bad") is None
        assert reader.get_next_run_time() == T0
    assert "bad" in document_ids(store)  # kept, never deleted
    if case.startswith("next_run_time"):
        return  # never due and never read by a query: it stays as it is until someone looks it up
    assert [q.id for q in store.get_quarantined_jobs()] == ["bad"]


def test_ids_of_other_types_are_quarantined(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store()
    store.start(scheduler, "default")
    state = make_job(scheduler, "7", next_run_time=T0).__getstate__()
    insert_document(store, {"_id": 7, "next_run_time": T0.timestamp(), "job_state": pickle.dumps(state)})
    assert store.get_due_jobs(T0) == []
    assert [q.id for q in store.get_quarantined_jobs()] == [7]


RUNS = RunLog()


def tick(name: str) -> None:
    RUNS.record(name)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_scheduler_keeps_running_beside_hostile_documents(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    RUNS.clear()
    store = make_store(serializer=serializer)
    now = dt.datetime.now(UTC)
    insert_document(store, {"_id": "bad", "next_run_time": now.timestamp(), FORMAT_FIELD: serializer,
                            "job_state": encoded(store, scheduler, "bad", next_run_time="x")})  # fmt: skip
    insert_document(store, {"_id": "empty", "next_run_time": now.timestamp(), FORMAT_FIELD: serializer})
    running = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    running.start()
    try:
        running.add_job(tick, IntervalTrigger(seconds=0.2), args=["good"], id="good", next_run_time=now)
        assert RUNS.wait_until(lambda runs: runs["good"] >= 3, 15), RUNS.counts()
        assert loop_is_alive(running)
    finally:
        running.shutdown()
    assert sorted(q.id for q in store.get_quarantined_jobs()) == ["bad", "empty"]


# ----------------------------------------------------------------------------- quarantine operations


def quarantine_one(store: Any, scheduler: BackgroundScheduler, job_id: str = "broken") -> None:
    state = make_job(scheduler, job_id, next_run_time=T0 + dt.timedelta(minutes=5)).__getstate__()
    state["func"] = "tests.not_deployed_yet:task"
    insert_document(store, {"_id": job_id, "next_run_time": (T0 + dt.timedelta(minutes=5)).timestamp(),
                            "job_state": pickle.dumps(state), FORMAT_FIELD: "pickle"})  # fmt: skip
    assert store.lookup_job(job_id) is None


def test_quarantined_jobs_are_listed_oldest_first(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store()
    store.start(scheduler, "default")
    quarantine_one(store, scheduler, "z-first")  # ids in the other order: ties are sorted by id
    (first,) = store.get_quarantined_jobs()
    assert first.at is not None
    # the next quarantine comes a measurable instant later (the database keeps milliseconds)
    assert wait_for(lambda: dt.datetime.now(UTC) >= first.at + dt.timedelta(milliseconds=2), 5)
    quarantine_one(store, scheduler, "a-second")
    listed = store.get_quarantined_jobs()
    assert [q.id for q in listed] == ["z-first", "a-second"]
    assert listed[0] == first
    assert first.format == "pickle"
    assert first.error_type == "jobshelf.DeserializationError"
    assert "tests.not_deployed_yet" in first.message
    assert first.next_run_time == T0 + dt.timedelta(minutes=5)
    assert first.at is not None and first.at.tzinfo is not None and first.at <= dt.datetime.now(UTC)
    assert first.size > 0


def test_restore_after_the_cause_is_fixed(
    make_store: Any, scheduler: BackgroundScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    store = make_store()
    store.start(scheduler, "default")
    quarantine_one(store, scheduler)
    with pytest.raises(Exception, match="job 'broken' is still quarantined"):
        store.restore_quarantined_job("broken")
    assert [q.id for q in store.get_quarantined_jobs()] == ["broken"]

    deployed = types.ModuleType("tests.not_deployed_yet")
    deployed.task = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.not_deployed_yet", deployed)
    job = store.restore_quarantined_job("broken")
    assert job.id == "broken" and job.func is deployed.task  # type: ignore[attr-defined]
    assert store.get_quarantined_jobs() == []
    assert store.get_next_run_time() == T0 + dt.timedelta(minutes=5)
    assert [j.id for j in store.get_due_jobs(T0 + dt.timedelta(minutes=5))] == ["broken"]


def test_restore_of_an_unknown_id_raises_lookup_error(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    from apscheduler.jobstores.base import JobLookupError

    store = make_store()
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "healthy"))
    for job_id in ("nope", "healthy"):
        with pytest.raises(JobLookupError):
            store.restore_quarantined_job(job_id)


def test_adding_over_a_quarantined_job_says_so(make_store: Any, scheduler: BackgroundScheduler) -> None:
    from apscheduler.jobstores.base import ConflictingIdError

    store = make_store()
    store.start(scheduler, "default")
    quarantine_one(store, scheduler)
    with pytest.raises(
        ConflictingIdError, match=r"job 'broken' exists but is quarantined.*restore_quarantined_job"
    ):
        store.add_job(make_job(scheduler, "broken"))


def test_start_warns_once_with_the_count(
    make_store: Any, scheduler: BackgroundScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    store.start(scheduler, "default")
    for name in ("a", "b", "c"):
        quarantine_one(store, scheduler, name)
    restarted = make_store()
    with caplog.at_level(logging.WARNING):
        restarted.start(scheduler, "default")
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "3 quarantined jobs" in m]) == 1, messages


def test_a_thousand_undecodable_documents(
    make_store: Any, scheduler: BackgroundScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    for index in range(50):
        store.add_job(make_job(scheduler, f"good-{index:03}", next_run_time=T0))
    for index in range(1000):
        garbage = b"\xc1" + bytes([index % 256])
        document = {"_id": f"bad-{index:04}", "next_run_time": T0.timestamp(), "job_state": garbage}
        insert_document(store, {**document, FORMAT_FIELD: "msgpack"})
    with caplog.at_level(logging.WARNING):
        due = store.get_due_jobs(T0)
    assert [job.id for job in due] == [f"good-{index:03}" for index in range(50)]
    warned = [record for record in caplog.records if "quarantined it" in record.getMessage()]
    assert len(warned) == 1000
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert len(store.get_all_jobs()) == 50  # later reads do not decode or quarantine them again
        assert len(store.get_due_jobs(T0)) == 50
    assert not [record for record in caplog.records if "bad-" in record.getMessage()]
    listed = store.get_quarantined_jobs()
    assert len(listed) == 1000 and len({q.id for q in listed}) == 1000
    assert len(document_ids(store)) == 1050


def test_quarantine_and_a_concurrent_update_race_safely(
    adapter: str, mongo_client: Any, database: str, scheduler: BackgroundScheduler
) -> None:
    """A job rewritten between read and quarantine is not quarantined: the new state wins."""
    from jobshelf import MemoryJobStore, MemoryStorage, MongoDBJobStore

    barrier = threading.Barrier(2)
    base: Any = MongoDBJobStore if adapter == "mongodb" else MemoryJobStore

    class SlowToQuarantine(base):  # type: ignore[misc, valid-type]
        """An adapter whose quarantine write comes late: the other store's update lands first."""

        def _quarantine(self, row: Any, record: Any) -> bool:
            barrier.wait(5)
            barrier.wait(5)
            return bool(super()._quarantine(row, record))

    if adapter == "mongodb":
        options: dict[str, Any] = {"database": database, "client": mongo_client}
    else:
        options = {"storage": MemoryStorage()}
    store, writer = SlowToQuarantine(**options), base(**options)  # two processes, one collection
    store.start(scheduler, "default")
    writer.start(scheduler, "writer")
    insert_document(store, {"_id": "j", "next_run_time": T0.timestamp(), "job_state": b"garbage"})
    reader = threading.Thread(target=store.get_due_jobs, args=(T0,))
    reader.start()
    barrier.wait(5)
    writer.update_job(make_job(scheduler, "j", next_run_time=T0))  # after the read, before quarantine
    barrier.wait(5)
    reader.join()
    document = find_document(store, "j")
    assert document is not None and "quarantine" not in document
    assert [job.id for job in writer.get_due_jobs(T0)] == ["j"]
