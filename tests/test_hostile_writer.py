"""A hostile writer, generally (issue 14, "Prove it generally").

Under a running ``BackgroundScheduler`` with a heartbeat job, an audit hook and a signed,
allow-listed store, any field of any document (at any depth, the bytes inside the signed state
included) is set to any BSON value, or a forged document is inserted, one mutation at a time.
After each, the property: no code ran and nothing was imported because of the data, the loop
still runs, no job ran that its signed state did not schedule, every untouched job is as it was,
and the loop made a bounded number of passes (no spinning). At the end: the heartbeat never
missed its time, and memory stayed bounded.

``make test`` runs a short pass; ``make fuzz`` (``JOBSHELF_FUZZ_EXAMPLES=100000``) runs 10,000
mutations per configuration.
"""

from __future__ import annotations

import datetime as dt
import resource
import threading
import time
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from jobshelf import MongoDBJobStore, SignedSerializer
from jobshelf.testing import state_difference

from .helpers import UTC, audit_events, fuzz_examples, loop_is_alive

pytestmark = pytest.mark.fuzz

#: Mutations per configuration: a tenth of the fuzz inputs (``make fuzz``: 10,000).
MUTATIONS = max(25, fuzz_examples() // 10)
KEY = b"hostile-writer-test-key-0123456789abcdef"
TARGETS = ["target-date", "target-interval", "target-cron"]
UNTOUCHED = ["untouched-date", "untouched-cron"]
RUNS: dict[str, int] = {}
#: The issue's forged hand-over: a dead holder whose pending fire time is three days old.
GHOST_LEASE = {"holder": "ghost", "until": 0.0, "token": 1, "pending": time.time() - 3 * 86400}
_RUNS_LOCK = threading.Lock()


def record_run(name: str) -> None:
    """Every job's callable: counts runs by name."""
    with _RUNS_LOCK:
        RUNS[name] = RUNS.get(name, 0) + 1


def runs(name: str) -> int:
    with _RUNS_LOCK:
        return RUNS.get(name, 0)


# ----------------------------------------------------------------------------- BSON values

_FIELD_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_EXTREMES = [-1e300, 1e300, 0.0, -0.0, 1.7976931348623157e308, 5e-324, -1.0, 2**53 + 1.0]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_EXTREMES),
    st.text(max_size=40),
    st.text(alphabet="\x00\x1b\x07\x9b\u202e[]0;m", max_size=12),
    st.binary(max_size=48).map(Binary),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999000)),
    st.sampled_from([Decimal128("1E+6000"), Decimal128("-Infinity"), Decimal128("NaN"), Decimal128("0")]),
    st.builds(ObjectId),
)
BSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_FIELD_NAME, children, max_size=3),
    max_leaves=8,
)
#: Fields a jobshelf document has, at any depth (a shared store's lease, a quarantine record).
PATHS = [
    "next_run_time", "job_state", "job_state_format", "job_state_rev", "quarantine", "lease",
    "quarantine.next_run_time", "quarantine.at", "quarantine.message", "quarantine.format",
    "lease.holder", "lease.until", "lease.pending", "lease.token", "lease.remove", "extra",
]  # fmt: skip


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any, Any]:
    kind = draw(st.sampled_from(["set", "unset", "bytes", "insert"]))
    target = draw(st.sampled_from(TARGETS))
    if kind == "set":
        return kind, target, (draw(st.sampled_from(PATHS)), draw(BSON_VALUES))
    if kind == "unset":
        return kind, target, draw(st.sampled_from(PATHS))
    if kind == "bytes":
        edit = draw(st.sampled_from(["flip", "truncate", "insert"]))
        return kind, target, (edit, draw(st.integers(0, 10_000)), draw(st.binary(min_size=1, max_size=8)))
    forged = draw(st.dictionaries(st.sampled_from(PATHS[:6]), BSON_VALUES, max_size=6))
    return (
        kind,
        draw(st.one_of(_SCALARS.filter(lambda v: not isinstance(v, (list, dict))), _FIELD_NAME)),
        forged,
    )


# ----------------------------------------------------------------------------- the property


class CountingStore(MongoDBJobStore):
    passes = 0

    def get_due_jobs(self, now: dt.datetime) -> list[Any]:
        CountingStore.passes += 1
        jobs: list[Any] = super().get_due_jobs(now)
        return jobs


def apply(collection: Any, mutation: tuple[str, Any, Any], canonical: dict[str, dict[str, Any]]) -> None:
    kind, target, detail = mutation
    if kind == "set":
        path, value = detail
        if "." in path:  # a field inside a sub-document: make the parent a document first
            collection.update_one({"_id": target, path.split(".")[0]: {"$not": {"$type": "object"}}},
                                  {"$set": {path.split(".")[0]: {}}})  # fmt: skip
        collection.update_one({"_id": target}, {"$set": {path: value}})
    elif kind == "unset":
        collection.update_one({"_id": target}, {"$unset": {detail: ""}})
    elif kind == "bytes":
        edit, position, payload = detail
        data = bytes(canonical[target]["job_state"])
        position %= len(data)
        if edit == "flip":
            data = data[:position] + bytes([data[position] ^ (payload[0] or 1)]) + data[position + 1 :]
        elif edit == "truncate":
            data = data[:position]
        else:
            data = data[:position] + payload + data[position:]
        collection.update_one({"_id": target}, {"$set": {"job_state": Binary(data)}})
    else:
        if target in canonical or target in UNTOUCHED or target == "heartbeat":
            return
        collection.delete_one({"_id": target})
        collection.insert_one({**detail, "_id": target})


def scheduled(store: MongoDBJobStore, missed: list[str]) -> BackgroundScheduler:
    """A paused scheduler on ``store`` with the heartbeat, the targets and the untouched jobs."""
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})

    def on_missed(event: Any) -> None:
        if isinstance(event, JobExecutionEvent):
            missed.append(event.job_id)

    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    far = dt.datetime.now(UTC) + dt.timedelta(days=30)
    add = scheduler.add_job
    add(record_run, "interval", seconds=1, args=["heartbeat"], id="heartbeat", misfire_grace_time=5)
    add(record_run, "date", run_date=far, args=["target-date"], id="target-date")
    add(record_run, "interval", days=3, start_date=far, args=["target-interval"], id="target-interval")
    add(record_run, "cron", year=far.year + 1, args=["target-cron"], id="target-cron")
    add(record_run, "date", run_date=far, args=["untouched-date"], id="untouched-date")
    add(record_run, "cron", hour=3, start_date=far, args=["untouched-cron"], id="untouched-cron")
    return scheduler


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared"])
def test_no_field_of_any_document_can_run_code_stop_spin_or_flood_the_scheduler(
    mongodb_uri: str, database: str, shared: bool
) -> None:
    RUNS.clear()
    CountingStore.passes = 0
    client: MongoClient[Any] = MongoClient(mongodb_uri)
    options: dict[str, Any] = {"shared": True, "lease": 5} if shared else {}
    store = CountingStore(
        database=database, client=client, serializer=SignedSerializer("msgpack", keys=[KEY]),
        allowed_callables=[f"{__name__}:record_run"], **options,
    )  # fmt: skip
    collection = store.collection
    missed: list[str] = []
    scheduler = scheduled(store, missed)
    canonical = {target: collection.find_one({"_id": target}) for target in TARGETS}
    untouched = {job_id: store.lookup_job(job_id).__getstate__() for job_id in UNTOUCHED}  # type: ignore[union-attr]
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scheduler.resume()
    started = time.monotonic()
    examples = [0]

    @settings(max_examples=MUTATIONS, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutation=mutations())
    @example(mutation=("set", "target-date", ("next_run_time", -1e300)))  # the examples first
    @example(mutation=("set", "target-date", ("next_run_time", 0.0)))
    @example(mutation=("set", "target-interval", ("lease", "x")))
    @example(mutation=("set", "target-interval", ("lease", GHOST_LEASE)))
    @example(mutation=("set", "target-cron", ("quarantine.next_run_time", -1e300)))
    @example(mutation=("set", "target-cron", ("next_run_time", float("nan"))))
    def one_mutation(mutation: tuple[str, Any, Any]) -> None:
        examples[0] += 1
        collection.delete_many({"_id": {"$nin": [*TARGETS, *UNTOUCHED, "heartbeat"]}})
        for target, document in canonical.items():
            collection.replace_one({"_id": target}, document, upsert=True)
        passes_before = CountingStore.passes
        with audit_events() as events:
            try:
                apply(collection, mutation, canonical)
            except Exception:  # the server refused the write (a value it cannot store): nothing to test
                return
            scheduler.wakeup()
            assert loop_is_alive(scheduler, 15), f"the scheduler's loop stopped after {mutation!r}"
        assert events == [], f"{mutation!r} made the scheduler run or import: {events}"
        assert [runs(target) for target in TARGETS] == [0, 0, 0], f"{mutation!r} ran a job its state did not"
        for job_id, state in untouched.items():
            job = store.lookup_job(job_id)
            assert job is not None and state_difference(state, job.__getstate__()) is None, (mutation, job_id)
        # a spinning loop makes thousands of passes; a healthy one a few per mutation
        assert CountingStore.passes - passes_before <= 12, (mutation, CountingStore.passes - passes_before)

    try:
        one_mutation()
    finally:
        scheduler.shutdown()
        client.close()
    elapsed = time.monotonic() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before) / 1024
    mode = "shared" if shared else "plain"
    print(f"\nhostile writer ({mode}): {examples[0]} mutations in {elapsed:.1f} s, {CountingStore.passes} "
          f"loop passes, heartbeat {runs('heartbeat')} runs, max RSS +{grown_mib:.0f} MiB")  # fmt: skip
    assert missed == [], f"the heartbeat missed its time: {missed}"
    assert runs("heartbeat") >= elapsed - 4, (runs("heartbeat"), elapsed)
    assert grown_mib < 256
