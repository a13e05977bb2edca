"""Fields outside the state are hints (issue 14, part 4).

The decoded state is authoritative for what runs and when. The indexed ``next_run_time`` and the
quarantine record can hold any value another program wrote: at most that one job is delayed or
skipped; the scheduler never stops or spins, and no run time appears that the state lacks.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from jobshelf import MemoryJobStore, MemoryStorage, MongoDBJobStore

from .helpers import UTC, RunLog, find_document, insert_document, loop_is_alive, make_job

RUNS = RunLog()


def count_run(name: str) -> None:
    RUNS.record(name)


#: Index values an attacker (or a broken tool) can write, each a test.
HOSTILE_INDEX: dict[str, Any] = {
    "-1e300": -1e300,
    "1e300": 1e300,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "zero (state says in an hour)": 0.0,
    "negative int": -1,
    "int64 huge": Int64(2**62),
    "decimal128": Decimal128("1E+6000"),
    "string": "x",
    "array": [1.0],
    "document": {"a": 1},
    "bool": True,
    "date at the calendar's end": dt.datetime(9999, 12, 31),
    "date at the calendar's start": dt.datetime(1, 1, 1),
}


def set_field(store: Any, job_id: str, field: str, value: Any) -> None:
    """Overwrite one field of a stored document behind the store's back."""
    if isinstance(store, MongoDBJobStore):
        store.collection.update_one({"_id": job_id}, {"$set": {field: value}})
        return
    document = find_document(store, job_id)
    assert document is not None
    document[field] = value
    store.remove_job(job_id)
    insert_document(store, document)


@pytest.mark.parametrize("value", HOSTILE_INDEX.values(), ids=HOSTILE_INDEX.keys())
def test_a_hostile_index_value_delays_at_most_its_own_job(
    make_store: Any, scheduler: BackgroundScheduler, value: Any
) -> None:
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    now = dt.datetime.now(UTC).replace(microsecond=0)
    in_an_hour = now + dt.timedelta(hours=1)
    store.add_job(make_job(scheduler, "victim", next_run_time=in_an_hour))
    store.add_job(make_job(scheduler, "other", next_run_time=now + dt.timedelta(hours=2)))
    set_field(store, "victim", "next_run_time", value)

    first = store.get_next_run_time()  # may be a past hint (0): it must not raise
    assert first is None or first.tzinfo is not None
    assert store.get_due_jobs(now) == []  # neither job is due by its state
    after = store.get_next_run_time()
    assert after is not None and after >= now  # no past time: the loop cannot spin on it
    assert after in (in_an_hour, now + dt.timedelta(hours=2))  # a time some state has, never a forged one
    victim, other = store.lookup_job("victim"), store.lookup_job("other")
    assert victim is not None and victim.next_run_time == in_an_hour
    assert other is not None and other.next_run_time == now + dt.timedelta(hours=2)
    assert store.get_quarantined_jobs() == []


class StubbornIndexStore(MemoryJobStore):
    """A storage that refuses to rewrite the index (a read-only replica, a denied write)."""

    def _set_index(self, row: Any, timestamp: float | None) -> bool:
        return False


@pytest.mark.parametrize("value", [0.0, -1e300, math.nan], ids=["zero", "-1e300", "nan"])
def test_an_index_that_cannot_be_repaired_does_not_make_the_loop_spin(
    scheduler: BackgroundScheduler, value: float
) -> None:
    storage = MemoryStorage()
    store = StubbornIndexStore(storage=storage, serializer="msgpack")
    store.start(scheduler, "default")
    now = dt.datetime.now(UTC).replace(microsecond=0)
    in_an_hour = now + dt.timedelta(hours=1)
    store.add_job(make_job(scheduler, "victim", next_run_time=in_an_hour))
    set_field(store, "victim", "next_run_time", value)
    for _ in range(3):
        assert store.get_due_jobs(now) == []
        assert store.get_next_run_time() == in_an_hour  # the state's time, remembered
    store.update_job(make_job(scheduler, "victim", next_run_time=now + dt.timedelta(minutes=5)))
    assert store.get_next_run_time() == now + dt.timedelta(minutes=5)  # our own write is trusted again


class CountingStore(MongoDBJobStore):
    passes = 0

    def get_due_jobs(self, now: dt.datetime) -> list[Any]:
        CountingStore.passes += 1
        jobs: list[Any] = super().get_due_jobs(now)
        return jobs


@pytest.mark.parametrize("value", [0.0, -1e300], ids=["zero", "-1e300"])
def test_a_running_scheduler_keeps_its_heartbeat_with_a_forged_index(
    mongo_client: Any, database: str, value: float
) -> None:
    RUNS.clear()
    CountingStore.passes = 0
    store = CountingStore(database=database, client=mongo_client, serializer="msgpack")
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.add_job(count_run, "interval", seconds=1, args=["heartbeat"], id="heartbeat")
    in_an_hour = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    scheduler.add_job(count_run, "date", run_date=in_an_hour, args=["victim"], id="victim")
    scheduler.start()
    try:
        set_field(store, "victim", "next_run_time", value)
        scheduler.wakeup()
        assert RUNS.wait_until(lambda runs: runs["heartbeat"] >= 3, 15), RUNS.counts()
        assert loop_is_alive(scheduler)
        assert RUNS["victim"] == 0  # the state says in an hour: the forged index ran nothing
        # a spinning loop makes thousands of passes; a healthy one about two per heartbeat
        assert CountingStore.passes <= 4 * RUNS["heartbeat"] + 20, (CountingStore.passes, RUNS.counts())
    finally:
        scheduler.shutdown()


def test_a_hostile_quarantine_record_is_listed_and_restored_from_the_state(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    when = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    store.add_job(make_job(scheduler, "held", next_run_time=when))
    document = find_document(store, "held")
    assert document is not None
    store.remove_job("held")
    document.pop("next_run_time")
    document["quarantine"] = {
        "next_run_time": -1e300, "at": "yesterday", "message": 5, "format": ["x"], "error_type": None,
        "cause": {"$gt": 1},
    }  # fmt: skip
    insert_document(store, document)
    [listed] = store.get_quarantined_jobs()
    assert (listed.id, listed.next_run_time, listed.at, listed.message, listed.format) == (
        "held",
        None,
        None,
        "",
        "pickle",
    )
    restored = store.restore_quarantined_job("held")
    assert restored.next_run_time == when  # from the state, not the record
    assert store.get_next_run_time() == when
    assert store.get_quarantined_jobs() == []


def forged_rows(store: Any, count: int, **fields: Any) -> None:
    """Documents the store reads as due but never runs (quarantined, or another store's format)."""
    for n in range(count):
        insert_document(store, {"_id": f"forged-{n}", "next_run_time": 0, "job_state": b"x", **fields})


@pytest.mark.parametrize(
    ("count", "fields"),
    [(1, {"job_state_format": "msgpack", "quarantine": {"at": 1}}),
     (1, {"job_state_format": "msgpack", "quarantine": "x"}),
     (1, {"quarantine": {"next_run_time": 0}}),
     (600, {"job_state_format": "another-stores-format"})],
    ids=["quarantined", "quarantine a string", "quarantined untagged", "600 of another store's"],
)  # fmt: skip
def test_rows_never_run_here_do_not_wake_the_loop(
    mongo_client: Any, database: str, count: int, fields: dict[str, Any]
) -> None:
    RUNS.clear()
    CountingStore.passes = 0
    store = CountingStore(database=database, client=mongo_client, serializer="msgpack", accept=["pickle"])
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.add_job(count_run, "interval", seconds=1, args=["heartbeat"], id="heartbeat")
    scheduler.start()
    try:
        forged_rows(store, count, **fields)
        scheduler.wakeup()
        assert RUNS.wait_until(lambda runs: runs["heartbeat"] >= 3, 15), RUNS.counts()
        assert loop_is_alive(scheduler)
        assert CountingStore.passes <= 4 * RUNS["heartbeat"] + 20, (CountingStore.passes, RUNS.counts())
        next_run = store.get_next_run_time()
        assert next_run is not None and next_run > dt.datetime.now(UTC) - dt.timedelta(seconds=30)  # not 1970
    finally:
        scheduler.shutdown()
