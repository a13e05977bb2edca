"""Execution records are data: any value in any field, written by anyone, must not break reading.

Each record below is a valid one with one field replaced by a value of another kind; reading them
all back (list, filters, summary) never raises, and every field of what comes back has the type
the API promises.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from jobshelf import Holder, MemoryJobStore, MongoDBJobStore, RunError, RunRecord

from .helpers import UTC, loop_is_alive

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
FIELDS = ["job_id", "scheduled_run_time", "submitted_at", "finished_at", "duration", "outcome", "error",
          "holder", "duplicate", "copy"]  # fmt: skip

#: Values of every BSON kind (and some that are wrong inside the right kind).
BSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**62, Int64(7), 1.5, -0.0, float("inf"), float("-inf"), "", "executed ",
    "\x1b]0;PWNED\x07\u202e", "x" * 100_000, b"\x00\xff", Binary(b"\x01", 5), ObjectId(),
    dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59), [], [1, "a", {"b": None}], {},
    {"host": ["x"], "pid": "12", "instance": {"a": 1}, "type": 5, "message": None, "traceback": b"x"},
    {"nested": {"deeper": {"deepest": [[[]]]}}}, Decimal128("1.5"), Decimal128("NaN"), Regex(".*", "i"),
    Code("while(1){}"), Timestamp(1, 1), MinKey(), MaxKey(),
]  # fmt: skip


class Nasty:
    """A value (memory store only) whose every method a reader might call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")

    def __float__(self) -> float:
        raise RuntimeError("float")


PYTHON_VALUES: list[Any] = [*BSON_VALUES, float("nan"), 10**100, Nasty(), [Nasty()], object(),
                            {"host": Nasty(), "instance": Nasty(), "pid": Nasty(), "message": Nasty()},
                            dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))]  # fmt: skip


def valid(index: int) -> dict[str, Any]:
    """A well-formed record, unique per index."""
    when = T0 + dt.timedelta(seconds=index)
    return {
        "_id": f"r{index}",
        "job_id": f"job-{index}",
        "scheduled_run_time": when.timestamp(),
        "submitted_at": when,
        "finished_at": when + dt.timedelta(seconds=1),
        "duration": 1.0,
        "outcome": "executed",
        "error": None,
        "holder": {"host": "h", "pid": 1, "instance": "h:1:ab"},
        "copy": 0,
        "duplicate": False,
    }


def hostile_records(values: list[Any]) -> list[dict[str, Any]]:
    records = []
    for field_index, field in enumerate(FIELDS):
        for value_index, value in enumerate(values):
            record = valid(field_index * 1000 + value_index)
            record[field] = value
            records.append(record)
        missing = valid(field_index * 1000 + 999)
        del missing[field]
        records.append(missing)
    records.append({"_id": "empty"})
    return records


def assert_well_typed(record: RunRecord) -> None:
    assert type(record) is RunRecord
    assert type(record.job_id) is str and len(record.job_id) <= 1000
    for when in (record.scheduled_run_time, record.submitted_at, record.finished_at):
        assert when is None or (type(when) is dt.datetime and when.utcoffset() == dt.timedelta(0))
    assert record.duration is None or (type(record.duration) is float and math.isfinite(record.duration))
    assert record.outcome in {"executed", "error", "missed", "skipped", "unknown"}
    assert record.error is None or (
        type(record.error) is RunError and all(type(text) is str for text in record.error)
    )
    assert record.holder is None or (
        type(record.holder) is Holder
        and type(record.holder.host) is str
        and (record.holder.pid is None or type(record.holder.pid) is int)
        and type(record.holder.instance) is str
    )
    assert type(record.duplicate) is bool


def read_everything(store: Any) -> list[RunRecord]:
    every = store.get_job_history(limit=100_000)
    for record in every:
        assert_well_typed(record)
    store.get_job_history("job-1", limit=10)
    store.get_job_history(outcome=["executed", "error"], since=T0, limit=10)
    store.get_job_history(duplicates=True)
    summary = store.get_history_summary(since=T0 - dt.timedelta(days=1))
    assert all(type(key) is str for key in summary.outcomes) and all(type(k) is str for k in summary.holders)
    return list(every)


def test_any_value_in_any_field_of_a_mongodb_record(mongo_client: MongoClient[Any], database: str) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, history=True)
    store.start(BackgroundScheduler(timezone=UTC), "default")  # with its indexes
    store.shutdown()
    inserted = 0
    for record in hostile_records(BSON_VALUES):
        try:
            mongo_client[database].jobs_runs.insert_one(record)
            inserted += 1
        except PyMongoError:  # the server refuses some values (NaN, out-of-range dates): not stored
            continue
    assert inserted > len(FIELDS) * (len(BSON_VALUES) - 6)
    every = read_everything(store)
    assert len(every) == mongo_client[database].jobs_runs.count_documents(
        {"scheduled_run_time": {"$lte": float("inf")}}
    )
    by_id = {record.job_id: record for record in every}
    assert by_id["job-5003"].outcome == "unknown"  # outcome: 0
    assert by_id["<Int64 4611686018427387904>"].outcome == "executed"  # job_id: 2**62
    assert by_id["\x1b]0;PWNED\x07\u202e"].outcome == "executed"  # kept as written; shown escaped
    long_id = next(job_id for job_id in by_id if job_id.startswith("xxx"))
    assert len(long_id) == 1000 and long_id.endswith("characters cut]...")
    assert by_id["job-7023"].holder == Holder(host="<list ['x']>", pid=None, instance="<dict {'a': 1}>")
    expected = RunError(type="<int 5>", message="<NoneType None>", traceback="<bytes b'x'>")
    assert by_id["job-6023"].error == expected


@pytest.mark.parametrize("values", [PYTHON_VALUES], ids=["python values"])
def test_any_value_in_any_field_of_a_memory_record(values: list[Any]) -> None:
    store = MemoryJobStore(history=True)
    store.storage.runs["runs"] = [*hostile_records(values), Nasty(), None, ["not a record"]]  # type: ignore[list-item]
    every = read_everything(store)
    assert len(every) > len(FIELDS) * len(values) // 2


def test_what_malformed_fields_read_as() -> None:
    store = MemoryJobStore(history=True)
    record = valid(1)
    record.update(job_id=5, outcome="EXECUTED", duration=float("nan"), error="boom", duplicate=1,
                  submitted_at="yesterday", holder={"host": "\x1b[2J", "pid": True, "instance": None})
    store.storage.runs["runs"] = [record]
    (read,) = store.get_job_history()
    assert read.job_id == "<int 5>"
    assert (read.outcome, read.duration, read.error, read.duplicate, read.submitted_at) == (
        "unknown", None, None, False, None
    )  # fmt: skip
    assert read.holder == Holder(host="\x1b[2J", pid=None, instance="<NoneType None>")  # escaped when shown
    assert read.scheduled_run_time == T0 + dt.timedelta(seconds=1)


def mark(name: str) -> None:
    RAN.set()


RAN = threading.Event()


def test_records_are_written_beside_hostile_ones() -> None:
    """The memory store's writer meets malformed records (naive dates, non-records) and writes on."""
    store = MemoryJobStore(history=True, history_ttl=60)
    naive = valid(1)
    naive["finished_at"] = dt.datetime(2000, 1, 1)  # naive: not comparable with the TTL's cutoff
    store.storage.runs["runs"] = [naive, Nasty(), None, {"finished_at": Nasty()}]  # type: ignore[list-item]
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.start()
    try:
        RAN.clear()
        scheduler.add_job(mark, "date", run_date=dt.datetime.now(UTC), args=["real"], id="real")
        assert RAN.wait(20)
        assert loop_is_alive(scheduler)
    finally:
        scheduler.shutdown(wait=True)
    (record,) = store.get_job_history("real")
    assert record.outcome == "executed" and store.history_dropped == 0
    assert len(store.storage.runs["runs"]) == 5  # nothing of another program's removed but by its TTL
