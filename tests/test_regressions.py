"""Regression tests for the bugs found by trying 0.1.0 as a user would (issue 8)."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import threading
import time
from typing import Any

import msgpack
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from jobshelf import (
    DeserializationError,
    MemoryJobStore,
    MongoDBJobStore,
    MsgpackStateSerializer,
    SerializationError,
    SerializerConfigError,
    register_trigger,
    registered_triggers,
    unregister_trigger,
)
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.serializers.msgpack import EXT_CODES, MAX_DEPTH, MAX_EXT_VALUES
from jobshelf.testing import sample_state

from .helpers import UTC, RunLog, document_ids, find_document, insert_document, loop_is_alive, make_job

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------- 0: the C stack


def nested_tuples(depth: int) -> bytes:
    """A tuple in a tuple in a tuple...: ext values nested ``depth`` deep."""
    payload = msgpack.packb([])
    for _ in range(depth):
        payload = msgpack.packb(msgpack.ExtType(EXT_CODES["tuple"], payload))
    return payload


def nested_triggers(depth: int) -> bytes:
    date = msgpack.packb(["date", None])
    payload = msgpack.ExtType(EXT_CODES["trigger"], date)
    for _ in range(depth):
        payload = msgpack.ExtType(EXT_CODES["trigger"], msgpack.packb(["and", [payload], None]))
    return msgpack.packb(payload)


def errors_on_a_thread(work: Any) -> list[BaseException]:
    """Run ``work`` on a thread (threads have smaller C stacks than the main one); what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return errors


def state_with(args: bytes) -> bytes:
    """A msgpack-state job whose args are the given packed value."""
    fields = [1, "deep", "tests.helpers:dummy_job", None, "default", msgpack.ExtType(1, b"\x90"),
              {}, "deep", 1, False, 1, None]  # fmt: skip
    fields[5] = msgpack.ExtType(EXT_CODES["tuple"], b"\x91" + args)
    return msgpack.packb(fields)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 1_000, 20_000])
@pytest.mark.parametrize("builder", [nested_tuples, nested_triggers])
def test_deep_nesting_is_refused_not_a_crash(builder: Any, depth: int) -> None:
    data = state_with(builder(depth))
    errors = errors_on_a_thread(lambda: MsgpackStateSerializer().loads(data))
    assert len(errors) == 1 and isinstance(errors[0], DeserializationError), errors
    assert "nest deeper" in str(errors[0]) or "StackError" in str(errors[0])


def test_nesting_within_the_limit_round_trips() -> None:
    serializer = MsgpackStateSerializer()
    value: Any = ()
    for _ in range(MAX_DEPTH - 4):
        value = (value,)
    state = sample_state()
    state["args"] = (value,)
    assert serializer.loads(serializer.dumps(state))["args"] == (value,)
    for _ in range(10):
        value = (value,)
    state["args"] = (value,)
    with pytest.raises(SerializationError, match="nest deeper"):
        serializer.dumps(state)  # what cannot be read back is not written


def test_the_714_byte_document_is_quarantined_and_the_store_lives(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    data = state_with(nested_tuples(230))
    assert len(data) < 1000
    store.add_job(make_job(scheduler, "good", next_run_time=T0))
    insert_document(store, {"_id": "deep", "next_run_time": T0.timestamp(), "job_state": data,
                            FORMAT_FIELD: "msgpack"})  # fmt: skip
    assert [job.id for job in store.get_due_jobs(T0)] == ["good"]
    assert [q.id for q in store.get_quarantined_jobs()] == ["deep"]
    assert "nest deeper" in store.get_quarantined_jobs()[0].message


def test_headers_claiming_billions_fail_fast() -> None:
    for header in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                   b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01"):  # fmt: skip
        started = time.perf_counter()
        with pytest.raises(DeserializationError):
            MsgpackStateSerializer().loads(state_with(header))
        assert time.perf_counter() - started < 5  # generous: a wrong allocation would take minutes


def test_ext_values_are_budgeted() -> None:
    one = msgpack.packb(msgpack.ExtType(EXT_CODES["tuple"], b"\x91\x01"))  # (1,): a nested pack
    items = one * (MAX_EXT_VALUES + 1)
    packed_list = b"\xdd" + (MAX_EXT_VALUES + 1).to_bytes(4, "big") + items
    with pytest.raises(DeserializationError, match="more than"):
        MsgpackStateSerializer().loads(state_with(packed_list))
    state = sample_state()
    state["args"] = tuple((index,) for index in range(MAX_EXT_VALUES + 1))
    with pytest.raises(SerializationError, match="more than"):
        MsgpackStateSerializer().dumps(state)


# ----------------------------------------------------------------------------- 1: lazy migration


class Opaque:
    """An instance of a user class: pickle stores it, msgpack-state cannot."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


RUNS = RunLog()


def record_run(name: str, _payload: Any = None) -> None:
    RUNS.record(name)


def test_lazy_migration_keeps_an_unencodable_job_in_its_format_and_the_scheduler_alive(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    RUNS.clear()
    writer = make_store()  # pickle, as the stock store writes
    setup = BackgroundScheduler(timezone=UTC)
    start = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    for job_id, payload in (("opaque", Opaque(1)), ("plain", 2)):
        job = make_job(setup, job_id, func=record_run, args=(job_id, payload),
                       trigger=IntervalTrigger(seconds=1, start_date=start), next_run_time=start)  # fmt: skip
        writer.add_job(job)
    store = make_store(serializer="msgpack", accept=["msgpack", "pickle"])
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    with caplog.at_level(logging.WARNING):
        scheduler.start()
        try:
            assert RUNS.wait_until(lambda runs: runs["opaque"] >= 3 and runs["plain"] >= 3, 20), (
                RUNS.counts()
            )  # fmt: skip
            assert loop_is_alive(scheduler)  # the loop survived the update it could not encode
        finally:
            scheduler.shutdown(wait=True)
    opaque = find_document(store, "opaque")
    plain = find_document(store, "plain")
    assert opaque is not None and plain is not None
    assert opaque[FORMAT_FIELD] == "pickle"  # kept, and updated, in the format it was read in
    assert opaque["next_run_time"] > start.timestamp() + 1  # its next run time moved on
    assert plain[FORMAT_FIELD] == "msgpack"  # the other one migrated
    warnings = [r.getMessage() for r in caplog.records if "stays in format pickle" in r.getMessage()]
    assert len(warnings) == 1 and "opaque" in warnings[0]
    assert pickle.loads(opaque["job_state"])["args"] == ("opaque", Opaque(1))


def test_adding_a_new_unencodable_job_still_raises(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store(serializer="msgpack", accept=["msgpack", "pickle"])
    store.start(scheduler, "default")
    with pytest.raises(SerializationError, match="job 'new'"):
        store.add_job(make_job(scheduler, "new", args=(Opaque(1),)))
    assert document_ids(store) == []


# ----------------------------------------------------------------------------- 2: pickle protocol


@pytest.mark.parametrize(("given", "used"), [(-1, pickle.HIGHEST_PROTOCOL), (-5, pickle.HIGHEST_PROTOCOL),
                                             (2, 2), (None, pickle.DEFAULT_PROTOCOL)])  # fmt: skip
def test_pickle_protocol_takes_what_pickle_takes(
    given: Any, used: int, scheduler: BackgroundScheduler
) -> None:
    store = MemoryJobStore(pickle_protocol=given)
    store.start(scheduler, "default")
    job = make_job(scheduler, "p")
    store.add_job(job)
    stored = store.storage.find("p")
    assert stored is not None
    assert stored["job_state"] == pickle.dumps(job.__getstate__(), used)


@pytest.mark.parametrize("given", [True, False, 6, 99, 2.0, "5"])
def test_pickle_protocol_refuses_the_rest(given: Any) -> None:
    with pytest.raises(SerializerConfigError, match="pickle protocol must be an int"):
        MongoDBJobStore(pickle_protocol=given, connect=False)


def test_minus_one_is_fine_beside_another_serializer() -> None:
    assert MongoDBJobStore(serializer="msgpack", pickle_protocol=-1, connect=False).format == "msgpack"


# ----------------------------------------------------------------------------- 3: oversize jobs


def test_oversize_job_names_the_job_and_both_sizes(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store(max_state_bytes=2000)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "small"))
    with pytest.raises(
        SerializationError, match=r"job 'big' is \d+ bytes encoded in pickle, more than max_state_bytes=2000"
    ):
        store.add_job(make_job(scheduler, "big", args=("x" * 5000,)))
    with pytest.raises(SerializationError, match="job 'small'"):
        store.update_job(make_job(scheduler, "small", args=("x" * 5000,)))
    assert document_ids(store) == ["small"]
    assert store.lookup_job("small").args == ()  # type: ignore[union-attr]


def test_over_the_server_limit_is_a_serialization_error(
    mongo_client: Any, database: str, scheduler: BackgroundScheduler
) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, max_state_bytes=32 * 1024 * 1024)
    store.start(scheduler, "default")
    with pytest.raises(
        SerializationError, match=r"job 'huge' does not fit in a MongoDB document: its state is \d+ bytes"
    ):
        store.add_job(make_job(scheduler, "huge", args=(b"x" * (17 * 1024 * 1024),)))
    assert store.collection.count_documents({}) == 0


def test_oversize_stored_document_is_quarantined_unread(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    writer = make_store()
    writer.start(scheduler, "default")
    writer.add_job(make_job(scheduler, "big", args=("x" * 5000,), next_run_time=T0))
    reader = make_store(max_state_bytes=1000)
    reader.start(scheduler, "default")
    with audit_unpickling() as events:
        assert reader.get_due_jobs(T0) == []
    assert events == []
    (quarantined,) = reader.get_quarantined_jobs()
    assert "more than max_state_bytes=1000" in quarantined.message and "not decoded" in quarantined.message


def audit_unpickling() -> Any:
    from .helpers import audit_events

    return audit_events()


# ----------------------------------------------------------------------------- 4: the trigger registry


class Every(BaseTrigger):  # type: ignore[misc]
    def __init__(self, start: dt.datetime) -> None:
        self.start = start

    def get_next_fire_time(self, previous_fire_time: Any, now: dt.datetime) -> dt.datetime:
        return max(self.start, now)


@pytest.fixture
def registered() -> Any:
    names: list[str] = []

    def register(name: str, cls: type = Every) -> None:
        register_trigger(cls, name, lambda t: [t.start], lambda p: Every(p[0]))
        names.append(name)

    yield register
    for name in set(names) & set(registered_triggers()):
        unregister_trigger(name)


def test_a_taken_name_is_refused_at_registration_and_serializers_still_work(registered: Any) -> None:
    registered("every")
    with pytest.raises(ValueError, match="trigger name 'every' is taken by Every"):
        register_trigger(type("Other", (Every,), {}), "every", list, list)
    with pytest.raises(ValueError, match="trigger name 'date' is taken"):
        register_trigger(type("Other", (Every,), {}), "date", list, list)
    MsgpackStateSerializer()  # construction is not affected by registrations


def test_serializers_made_before_a_registration_see_it(registered: Any) -> None:
    before = MsgpackStateSerializer()
    state = sample_state()
    state["trigger"] = Every(T0)
    with pytest.raises(SerializationError, match="register_trigger"):
        before.dumps(state)
    registered("every")
    restored = before.loads(before.dumps(state))
    assert restored["trigger"].start == T0
    data = before.dumps(state)
    unregister_trigger("every")
    with pytest.raises(DeserializationError, match="trigger 'every' is not registered"):
        before.loads(data)
    registered("every")  # registrable again after unregistering
    assert before.loads(data)["trigger"].start == T0


def test_unregistering_what_is_not_registered_is_an_error() -> None:
    with pytest.raises(LookupError):
        unregister_trigger("never-registered")
    with pytest.raises(LookupError):
        unregister_trigger("date")  # built-in ones stay


@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_the_pickle_family_survives_deep_nesting_too(depth: int) -> None:
    """pickle's C unpickler builds nested values without C recursion: no crash, only a refusal."""
    from jobshelf import PickleSerializer

    nested_lists = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."  # a list in a list in...
    errors = errors_on_a_thread(lambda: PickleSerializer().loads(nested_lists))
    assert len(errors) == 1 and isinstance(errors[0], DeserializationError)
    assert "expected a job state dict" in str(errors[0])


class RefusesSecondEncoding:
    """pickle, except that the job 'flaky' can be encoded once only (as if its state grew too big)."""

    format_name = "flaky-pickle"

    def __init__(self) -> None:
        self.encoded: set[str] = set()

    def dumps(self, state: dict[str, Any], /) -> bytes:
        if state["id"] == "flaky":
            if "flaky" in self.encoded:
                raise SerializationError("flaky-pickle cannot encode the job state any more")
            self.encoded.add("flaky")
        return pickle.dumps(state)

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return pickle.loads(data)  # type: ignore[no-any-return]


def test_a_job_that_ran_but_cannot_be_written_back_is_quarantined_not_raised() -> None:
    RUNS.clear()
    store = MemoryJobStore(serializer=RefusesSecondEncoding())
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.start()
    try:
        now = dt.datetime.now(UTC)
        for job_id in ("flaky", "steady"):
            scheduler.add_job(
                record_run, IntervalTrigger(seconds=0.2), args=[job_id], id=job_id, next_run_time=now
            )
        assert RUNS.wait_until(lambda runs: runs["steady"] >= 4, 15), RUNS.counts()
        assert loop_is_alive(scheduler)  # the update that could not be encoded did not kill it
    finally:
        scheduler.shutdown()
    assert RUNS["flaky"] == 1  # it ran once, then left the schedule instead of firing again
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "flaky" and "cannot encode the job state any more" in quarantined.message
