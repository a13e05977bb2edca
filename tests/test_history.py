"""Execution history (issue 17): what ran, when, where, for how long, and how it ended.

Every record here comes from a real ``BackgroundScheduler`` running real jobs, on both adapters;
the reading tests write records the way another program could (any value in any field).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.memory import MemoryJobStore as ApschedulerMemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from jobshelf import JobshelfError, MemoryJobStore, MongoDBJobStore, RunRecord

from .helpers import UTC, AnyStore, RunLog, StoreFactory, loop_is_alive, make_job, wait_for
from .test_faults import RestartableServer, restartable  # noqa: F401 - the fixture

RUNS = RunLog()
GATE = threading.Event()
STARTED = threading.Event()
MS = dt.timedelta(milliseconds=1)  # BSON dates keep milliseconds


class JobFailure(Exception):
    """What the failing job raises (a class of this module: its record names the module)."""


def ok(name: str) -> None:
    RUNS.record(name)


def fail(name: str) -> None:
    RUNS.record(name)
    raise JobFailure(f"{name} failed \x1b[2J")


def fail_loudly(name: str, depth: int = 0) -> None:
    """Fails 300 frames deep (two functions in turn: Python does not fold the frames) with 20,000
    characters of message: both are cut in the record."""
    if depth < 300:
        fail_deeper(name, depth + 1)
        return
    RUNS.record(name)
    raise ValueError("x" * 20_000)


def fail_deeper(name: str, depth: int) -> None:
    fail_loudly(name, depth + 1)


def wait_at_the_gate(name: str) -> None:
    """The first call tells STARTED and waits for GATE; every call is counted after that."""
    if not STARTED.is_set():
        STARTED.set()
        GATE.wait(30)
    RUNS.record(name)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    RUNS.clear()
    GATE.clear()
    STARTED.clear()
    yield
    GATE.set()  # nothing stays blocked


@contextlib.contextmanager
def running(store: AnyStore, **options: Any) -> Iterator[BackgroundScheduler]:
    """A real scheduler on ``store``; shut down (waiting for its jobs) at the end, which writes the
    store's last records."""
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store}, **options)
    scheduler.start()
    try:
        yield scheduler
    finally:
        GATE.set()
        # a pass that starts after the last run: the pass that submitted it is over (APScheduler's
        # own remove_job of a finished date job raises if the scheduler stops in the middle of it)
        loop_is_alive(scheduler)
        scheduler.shutdown(wait=True)


class EventLog:
    """APScheduler events of some kinds, waited on with deadlines."""

    def __init__(self, scheduler: BackgroundScheduler, mask: int) -> None:
        self.events: list[Any] = []
        self._changed = threading.Condition()
        scheduler.add_listener(self._on_event, mask)

    def _on_event(self, event: Any) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.events) >= count, timeout)


def soon(seconds: float = 0.5) -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(seconds=seconds)


def assert_holder_is_this_process(record: RunRecord) -> None:
    assert record.holder is not None
    host, pid = socket.gethostname(), os.getpid()
    assert (record.holder.host, record.holder.pid) == (host, pid)
    assert record.holder.instance.startswith(f"{host}:{pid}:")


# ----------------------------------------------------------------------------- outcomes


def test_runs_are_recorded_with_their_fire_times(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    start = soon()
    with running(store) as scheduler:
        # no fire time missed, merged or skipped, however loaded the machine: each one runs
        scheduler.add_job(ok, IntervalTrigger(seconds=0.25, start_date=start), args=["tick"], id="tick",
                          misfire_grace_time=None, coalesce=False, max_instances=100)  # fmt: skip
        assert RUNS.wait_until(lambda runs: runs["tick"] >= 4, 20), RUNS.counts()
    # the shutdown wrote every record of the runs it waited for
    records = store.get_job_history("tick")
    assert len(records) == RUNS["tick"]
    expected = [start + k * dt.timedelta(seconds=0.25) for k in range(len(records))]
    assert [record.scheduled_run_time for record in records] == expected[::-1]  # newest first, exact
    for record in records:
        assert record.job_id == "tick" and record.outcome == "executed"
        assert record.error is None and record.duplicate is False
        assert record.scheduled_run_time is not None and record.scheduled_run_time.tzinfo is UTC
        assert record.submitted_at is not None and record.finished_at is not None
        assert record.scheduled_run_time - MS <= record.submitted_at <= record.finished_at
        assert record.duration is not None
        assert abs(record.duration - (record.finished_at - record.submitted_at).total_seconds()) < 0.002
        assert_holder_is_this_process(record)
    assert store.history_dropped == 0


def test_errors_are_recorded_with_their_type_message_and_traceback(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    when = soon()
    with running(store) as scheduler:
        errors = EventLog(scheduler, EVENT_JOB_ERROR)
        scheduler.add_job(fail, "date", run_date=when, args=["broken"], id="broken")
        assert errors.wait(1, 20)
    (record,) = store.get_job_history("broken")
    assert (record.outcome, record.scheduled_run_time) == ("error", when)
    assert record.error is not None
    assert record.error.type == "tests.test_history.JobFailure"
    assert record.error.message == "broken failed \x1b[2J"  # stored as raised; the CLI escapes it
    assert 'in fail\n    raise JobFailure(f"{name} failed \\x1b[2J")' in record.error.traceback
    assert record.duration is not None and record.duration >= 0
    assert store.get_job_history(outcome="executed") == []
    assert store.get_job_history(outcome=["error", "missed"]) == [record]


def test_what_job_code_produces_is_cut_to_its_bound(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    with running(store) as scheduler:
        errors = EventLog(scheduler, EVENT_JOB_ERROR)
        scheduler.add_job(fail_loudly, "date", run_date=soon(), args=["loud"], id="loud")
        assert errors.wait(1, 20)
    (record,) = store.get_job_history("loud")
    assert record.error is not None and record.error.type == "ValueError"
    assert len(record.error.message) == 2000 and record.error.message.startswith("x" * 1900)
    assert record.error.message.endswith("characters cut]...")
    assert len(record.error.traceback) == 8000
    assert record.error.traceback.startswith("...[")  # the end is kept: where it failed
    assert record.error.traceback.rstrip().endswith('raise ValueError("x" * 20_000)')


def test_a_run_too_late_is_recorded_as_missed(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    late = dt.datetime.now(UTC) - dt.timedelta(seconds=10)
    with running(store) as scheduler:
        missed = EventLog(scheduler, EVENT_JOB_MISSED)
        scheduler.add_job(ok, "date", run_date=late, args=["late"], id="late", misfire_grace_time=1)
        assert missed.wait(1, 20)
    (record,) = store.get_job_history("late")
    assert (record.outcome, record.scheduled_run_time, record.duration, record.error) == (
        "missed", late, None, None
    )  # fmt: skip
    assert record.finished_at is not None and record.finished_at >= late + dt.timedelta(seconds=10) - MS
    assert RUNS["late"] == 0
    assert store.get_history_summary().outcomes == {"missed": 1}


def test_fire_times_skipped_at_max_instances_are_recorded(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    start = soon()
    with running(store) as scheduler:
        skipped = EventLog(scheduler, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(wait_at_the_gate, IntervalTrigger(seconds=0.2, start_date=start), args=["slow"],
                          id="slow", max_instances=1, misfire_grace_time=None, coalesce=False)  # fmt: skip
        assert skipped.wait(3, 20)
        scheduler.pause_job("slow")
        GATE.set()
        assert RUNS.wait_until(lambda runs: runs["slow"] >= 1, 20)
    skipped_times = sorted(t for event in skipped.events for t in event.scheduled_run_times)
    records = store.get_job_history("slow", limit=1000)
    by_outcome: dict[str, list[RunRecord]] = {}
    for record in records:
        by_outcome.setdefault(record.outcome, []).append(record)
    assert set(by_outcome) <= {"executed", "skipped"}, records
    assert sorted(r.scheduled_run_time or start for r in by_outcome["skipped"]) == skipped_times, records
    assert all(r.duration is None and r.error is None for r in by_outcome["skipped"])
    first = min(by_outcome["executed"], key=lambda r: r.scheduled_run_time or start)
    assert first.scheduled_run_time == start, records  # the run that held the only instance
    assert first.duration is not None and first.duration >= 0.4, records  # it waited through two skips


def test_a_run_reported_before_its_submission_is_recorded_once(make_store: StoreFactory) -> None:
    """The debug executor runs the job inside the loop pass, so its execution event comes before
    the submission event (dispatched at the end of the pass)."""
    store = make_store(history=True)
    when = soon()
    with running(store, executors={"default": DebugExecutor()}) as scheduler:
        scheduler.add_job(ok, "date", run_date=when, args=["inline"], id="inline")
        assert RUNS.wait_until(lambda runs: runs["inline"] == 1, 20)
        assert loop_is_alive(scheduler)  # a later pass: the submission event has been handled
    (record,) = store.get_job_history("inline")
    assert (record.outcome, record.scheduled_run_time) == ("executed", when)
    assert record.submitted_at is not None and record.finished_at is not None
    assert record.submitted_at <= record.finished_at and record.duration is not None


def test_only_this_stores_jobs_are_recorded(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    with running(store) as scheduler:
        scheduler.add_jobstore(ApschedulerMemoryJobStore(), "elsewhere")
        scheduler.add_job(ok, "date", run_date=soon(0.2), args=["other"], id="other", jobstore="elsewhere")
        scheduler.add_job(ok, "date", run_date=soon(0.3), args=["mine"], id="mine")
        assert RUNS.wait_until(lambda runs: runs["other"] == 1 and runs["mine"] == 1, 20)
    assert [record.job_id for record in store.get_job_history()] == ["mine"]


def test_a_fire_time_run_twice_is_kept_and_marked_duplicate(
    adapter: str, mongo_client: MongoClient[Any], database: str
) -> None:
    """Two schedulers run the same job at the same fire time, each from its own copy of it (as in
    the crash window of shared mode, or a mixed deployment): both records are kept in the one
    history, the second marked duplicate."""
    first: AnyStore
    second: AnyStore
    if adapter == "mongodb":
        first, second = (MongoDBJobStore(database=database, collection=name, client=mongo_client,
                                         history="runs") for name in ("jobs_a", "jobs_b"))  # fmt: skip
    else:
        first, second = MemoryJobStore(history=True), MemoryJobStore(history=True)
        second.storage.runs = first.storage.runs  # one history for two storages
    when = soon(1.5)
    for store in (first, second):
        store.add_job(make_job(BackgroundScheduler(timezone=UTC), "twice", func=ok, args=("twice",),
                               next_run_time=when))  # fmt: skip
    with running(first), running(second):
        assert RUNS.wait_until(lambda runs: runs["twice"] == 2, 20)
    records = first.get_job_history("twice")
    assert len(records) == 2
    assert {record.scheduled_run_time for record in records} == {when}
    assert sorted(record.duplicate for record in records) == [False, True]
    assert records[0].holder != records[1].holder  # two store instances ran it
    assert second.get_job_history(duplicates=True) == records
    assert first.get_history_summary().duplicates == 1


# ----------------------------------------------------------------------------- reading


def test_filters_since_outcome_job_and_limit(make_store: StoreFactory) -> None:
    store = make_store(history=True)
    start = soon()
    with running(store) as scheduler:
        scheduler.add_job(ok, IntervalTrigger(seconds=0.2, start_date=start), args=["a"], id="a",
                          misfire_grace_time=None)  # fmt: skip
        scheduler.add_job(fail, IntervalTrigger(seconds=0.2, start_date=start), args=["b"], id="b",
                          misfire_grace_time=None)  # fmt: skip
        assert RUNS.wait_until(lambda runs: runs["a"] >= 5 and runs["b"] >= 5, 20)
        scheduler.pause()
    every = store.get_job_history(limit=1000)
    order = [((r.scheduled_run_time or start).timestamp(), r.job_id) for r in every]
    assert order == sorted(order, key=lambda key: (-key[0], key[1]))
    assert store.get_job_history(limit=3) == every[:3]
    assert store.get_job_history("a", limit=1000) == [r for r in every if r.job_id == "a"]
    assert store.get_job_history(outcome="error", limit=1000) == [r for r in every if r.job_id == "b"]
    cut = start + dt.timedelta(seconds=0.4)
    assert store.get_job_history(since=cut, limit=1000) == [
        r for r in every if r.scheduled_run_time is not None and r.scheduled_run_time >= cut
    ]
    assert store.get_job_history(since=dt.timedelta(hours=1), limit=1000) == every
    summary = store.get_history_summary()
    assert summary.outcomes == {"executed": RUNS["a"], "error": RUNS["b"]}
    assert summary.runs == len(every) and summary.duplicates == 0
    assert list(summary.holders.values()) == [len(every)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"outcome": "failed"}, "outcome must be one or more of executed, error, missed, skipped"),
     ({"since": dt.datetime(2030, 1, 1)}, "since must be an aware datetime"),
     ({"since": "1h"}, "since must be an aware datetime or a timedelta"),
     ({"limit": 0}, "limit must be a whole number of at least 1"),
     ({"job_id": 5}, "job_id must be a string")],
)  # fmt: skip
def test_arguments_are_checked(make_store: StoreFactory, arguments: dict[str, Any], message: str) -> None:
    store = make_store(history=True)
    with pytest.raises(ValueError, match=message):
        store.get_job_history(**arguments)


# ----------------------------------------------------------------------------- configuration


def test_history_is_off_unless_asked_for(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.history is None
    with pytest.raises(JobshelfError, match=r"keeps no execution history: create the store with history="):
        store.get_job_history()


@pytest.mark.parametrize(("given", "name"), [(True, "jobs_runs"), ("yes", "jobs_runs"), ("false", None),
                                             (False, None), ("audit", "audit")])  # fmt: skip
def test_history_option_forms(mongo_client: MongoClient[Any], database: str, given: Any, name: Any) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, history=given)
    assert store.history == name
    memory = MemoryJobStore(history=given)
    assert memory.history == (None if name is None else "runs" if name == "jobs_runs" else name)


def test_history_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"history must be true, false or a collection name"):
        MemoryJobStore(history="runs$x")
    with pytest.raises(ValueError, match=r"history_ttl=60 and history_buffer=10000 apply to the execution"):
        MemoryJobStore(history_ttl=60)
    with pytest.raises(ValueError, match=r"history_ttl must be a number greater than 0, got 'soon'"):
        MemoryJobStore(history=True, history_ttl="soon")
    with pytest.raises(TypeError, match=r"unknown option 'histroy'; did you mean 'history'\?"):
        MemoryJobStore(histroy=True)
    store = MemoryJobStore(history="true", history_ttl="3600", history_buffer="50")
    assert (store.history, store.history_ttl, store.history_buffer) == ("runs", 3600.0, 50)


def test_the_history_collection_has_its_indexes(mongo_client: MongoClient[Any], database: str) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, history=True)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    store.shutdown()
    indexes = mongo_client[database].jobs_runs.index_information().values()
    keys = {tuple(info["key"]): info for info in indexes}
    assert keys[(("finished_at", 1),)]["expireAfterSeconds"] == 7 * 24 * 3600
    assert keys[(("job_id", 1), ("scheduled_run_time", 1), ("copy", 1))]["unique"] is True
    custom = MongoDBJobStore(database=database, client=mongo_client, history="audit", history_ttl="3600")
    custom.start(BackgroundScheduler(timezone=UTC), "default")
    custom.shutdown()
    keys = {tuple(info["key"]): info for info in mongo_client[database].audit.index_information().values()}
    assert keys[(("finished_at", 1),)]["expireAfterSeconds"] == 3600
    changed = MongoDBJobStore(database=database, client=mongo_client, history="audit", history_ttl=60)
    changed.start(BackgroundScheduler(timezone=UTC), "default")  # the existing TTL index takes the new one
    changed.shutdown()
    keys = {tuple(info["key"]): info for info in mongo_client[database].audit.index_information().values()}
    assert keys[(("finished_at", 1),)]["expireAfterSeconds"] == 60


# ----------------------------------------------------------------------------- an outage


def written(store: MongoDBJobStore) -> int:
    """How many records of the burst are in the database (-1 while it cannot be reached)."""
    try:
        return len(store.get_job_history("burst"))
    except PyMongoError:
        return -1


def test_an_outage_neither_stops_jobs_nor_loses_more_than_the_bound(
    restartable: RestartableServer,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    """30 fire times end while the server is down; 10 records may wait: the newest 10 are written
    when it is back, 20 are dropped and counted, with one warning."""
    client: MongoClient[Any] = MongoClient(
        restartable.uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300, socketTimeoutMS=2000
    )
    store = MongoDBJobStore(client=client, history=True, history_buffer=10)
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=40)
    fire_times = [start + dt.timedelta(seconds=k) for k in range(30)]
    try:
        with caplog.at_level(logging.WARNING), running(store, jobstore_retry_interval=0.5) as scheduler:
            executed = EventLog(scheduler, EVENT_JOB_EXECUTED)
            # one submission of 30 fire times, run one after another; the first waits for the outage
            every_second = IntervalTrigger(seconds=1, start_date=start, end_date=fire_times[-1])
            scheduler.add_job(wait_at_the_gate, every_second, args=["burst"], id="burst", next_run_time=start,
                              coalesce=False, misfire_grace_time=None)  # fmt: skip
            assert STARTED.wait(20)
            restartable.stop()
            GATE.set()
            # every run ends, and every event is handled, without waiting for the database
            assert executed.wait(30, 3), len(executed.events)
            assert RUNS["burst"] == 30
            assert loop_is_alive(scheduler)
            assert wait_for(lambda: store.history_dropped == 20, 10), store.history_dropped
            restartable.start()
            assert wait_for(lambda: written(store) == 10, 30)
            assert store.history_dropped == 20
        records = store.get_job_history("burst")
        assert [record.scheduled_run_time for record in records] == fire_times[:-11:-1]  # the newest 10
        assert {record.outcome for record in records} == {"executed"}
        messages = [record.getMessage() for record in caplog.records]
        dropping = [m for m in messages if "records wait to be written; the oldest are dropped" in m]
        assert len(dropping) == 1 and "history_buffer=10" in dropping[0]
        assert sum("execution records wait in memory" in m for m in messages) == 1
        assert any("the execution records kept meanwhile are written (20 dropped" in m for m in messages)
    finally:
        client.close()
