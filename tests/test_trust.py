"""Writing to the collection must not mean running code in the scheduler (issue 9).

Each protection is shown twice: the attack succeeding where the protection is off (so the test has
teeth), and failing where it is on.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given

from jobshelf import (
    DeserializationError,
    MemoryJobStore,
    SerializationError,
    SerializerConfigError,
    SignedSerializer,
)
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.serializers.msgpack import EXT_CODES
from jobshelf.testing import check_serializer, job_states, sample_state, state_difference

from .helpers import UTC, audit_events, document_ids, find_document, insert_document, make_job

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
KEY_OLD = b"k" * 32
KEY_NEW = b"n" * 32


class Forged:
    """Pickles into "run this shell command": what an attacker writes into job_state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def forged_pickle(job_id: str, path: Path) -> bytes:
    state = sample_state()
    state["id"] = job_id
    state["args"] = (Forged(path),)
    return pickle.dumps(state)


def _with_func(state: dict[str, Any], func: str) -> bytes:
    fields = msgpack.unpackb(MemoryJobStore(serializer="msgpack").serializer.dumps(state), raw=False)
    fields[2] = func
    return msgpack.packb(fields)


def foreign(store: Any, job_id: str, data: bytes, fmt: str | None) -> None:
    document = {"_id": job_id, "next_run_time": T0.timestamp(), "job_state": data}
    if fmt is not None:
        document[FORMAT_FIELD] = fmt
    insert_document(store, document)


# ----------------------------------------------------------------------------- forged pickle


def test_a_forged_pickle_runs_in_a_store_without_protection(
    make_store: Any, scheduler: BackgroundScheduler, tmp_path: Path
) -> None:
    """The threat, shown: the stock store's trust in pickle runs the payload on read."""
    store = make_store()
    store.start(scheduler, "default")
    foreign(store, "forged", forged_pickle("forged", tmp_path / "pwned"), None)
    store.get_due_jobs(T0)
    assert (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protection", ["allow-list", "signed"])
def test_a_forged_pickle_is_quarantined_unrun(
    make_store: Any, scheduler: BackgroundScheduler, tmp_path: Path, protection: str
) -> None:
    if protection == "allow-list":
        store = make_store(allowed_callables=["tests.helpers"])
        fmt = None
    else:
        store = make_store(serializer=SignedSerializer("pickle", keys=[KEY_NEW]))
        fmt = store.format
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", next_run_time=T0))
    foreign(store, "forged", forged_pickle("forged", tmp_path / "pwned"), fmt)
    with audit_events() as events:
        due = store.get_due_jobs(T0)
    assert [job.id for job in due] == ["good"]
    assert not (tmp_path / "pwned").exists()
    assert ("os.system", f"touch {tmp_path / 'pwned'}") not in events
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "forged"
    expected = "posix.system is not part of a job state" if protection == "allow-list" else "not signed"
    assert expected in quarantined.message


# ----------------------------------------------------------------------------- allow-list


def test_without_an_allow_list_a_stored_reference_imports_any_module(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    """The threat, shown: resolving a stored reference imports the module it names."""
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    sys.modules.pop("tests.evil_module", None)
    foreign(store, "evil", _with_func(_state("evil"), "tests.evil_module:IMPORTED"), "msgpack")
    store.lookup_job("evil")
    assert "tests.evil_module" in sys.modules


def _state(job_id: str) -> dict[str, Any]:
    state = sample_state()
    state["id"] = job_id
    state["func"] = "tests.helpers:dummy_job"
    return state


@pytest.mark.parametrize("serializer", ["msgpack", "pickle", "cloudpickle"])
@pytest.mark.parametrize("func", ["os:system", "tests.evil_module:IMPORTED", "tests.helpers_x:dummy_job"])
def test_a_callable_outside_the_allow_list_is_quarantined_before_it_is_resolved(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, func: str
) -> None:
    store = make_store(serializer=serializer, allowed_callables=["tests.helpers"])
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", next_run_time=T0))
    state = _state("evil")
    state["func"] = func
    data = _with_func(state, func) if serializer == "msgpack" else pickle.dumps(state)
    foreign(store, "evil", data, serializer)
    sys.modules.pop("tests.evil_module", None)
    with audit_events() as events:
        assert [job.id for job in store.get_due_jobs(T0)] == ["good"]
    assert "tests.evil_module" not in sys.modules
    assert not [event for event in events if event[0] == "import" and "evil" in event[1]]
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "evil"
    assert f"calls {func!r}, which allowed_callables does not allow" in quarantined.message


def test_allow_list_patterns(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store(allowed_callables=["tests.helpers:dummy_*", "apscheduler"])
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "ok"))
    with pytest.raises(
        SerializationError,
        match=r"job 'other' calls 'tests.helpers:find_document', which allowed_callables does not",
    ):
        store.add_job(make_job(scheduler, "other", func=find_document, args=(None, "x")))
    with pytest.raises(SerializationError, match="job 'ok' calls 'posix:getcwd'"):
        store.update_job(make_job(scheduler, "ok", func=os.getcwd))
    assert document_ids(store) == ["ok"]
    assert store.lookup_job("ok").func_ref == "tests.helpers:dummy_job"  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="must be a list"):
        MemoryJobStore(allowed_callables="tests")  # type: ignore[arg-type]


def test_callables_by_value_need_an_explicit_opt_in(make_store: Any, scheduler: BackgroundScheduler) -> None:
    strict = make_store(serializer="cloudpickle", allowed_callables=["tests"])
    strict.start(scheduler, "default")
    with pytest.raises(SerializationError, match=r"carries its callable by value .*allow_by_value=True"):
        strict.add_job(make_job(scheduler, "lambda", func=lambda: None))
    trusting = make_store(serializer="cloudpickle", allowed_callables=["tests"], allow_by_value=True)
    trusting.start(scheduler, "default")
    trusting.add_job(make_job(scheduler, "lambda", func=lambda: 42, next_run_time=T0))
    assert trusting.lookup_job("lambda").func() == 42  # type: ignore[union-attr]
    assert strict.lookup_job("lambda") is None  # the strict store quarantines what it cannot check
    assert [q.id for q in strict.get_quarantined_jobs()] == ["lambda"]


class Payload:
    """A user class in arguments: allowed with its module."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickling_reads_every_real_job(
    make_store: Any, scheduler: BackgroundScheduler, protocol: int
) -> None:
    import pytz

    store = make_store(pickle_protocol=protocol, allowed_callables=["tests"])
    store.start(scheduler, "default")
    berlin = pytz.timezone("Europe/Berlin")
    # (an And whose members can disagree after a run makes APScheduler 3.11 loop forever: refused)
    daily = CalendarIntervalTrigger(days=1, hour=3, timezone="Europe/Berlin", start_date=T0.date())
    trigger = OrTrigger([
        AndTrigger([CronTrigger(hour=3, timezone=berlin), daily]),
        CronTrigger(day_of_week="mon", timezone="America/New_York"),
    ])  # fmt: skip
    job = make_job(scheduler, "full", trigger=trigger, args=(Payload(3), {1, 2}, frozenset([3]), b"x"),
                   kwargs={"when": berlin.localize(dt.datetime(2030, 3, 31, 2, 30))},
                   next_run_time=trigger.get_next_fire_time(None, T0))  # fmt: skip
    store.add_job(job)
    restored = store.lookup_job("full")
    assert restored is not None
    assert restored.args[0].value == 3
    assert type(restored.trigger) is OrTrigger and type(restored.trigger.triggers[0]) is AndTrigger
    assert state_difference(job.__getstate__()["trigger"], restored.trigger) is None


@given(state=job_states())
def test_restricted_unpickling_loses_nothing(state: dict[str, Any]) -> None:
    """Read restricted, every state reads back exactly; one the store refuses anyway (a schedule
    APScheduler cannot compute) is refused the same way as when read unrestricted."""
    document = {"_id": state["id"], "next_run_time": None, "job_state": pickle.dumps(state)}
    plain, restricted = MemoryJobStore(), MemoryJobStore(allowed_callables=["jobshelf.testing"])
    plain.storage.insert(document)
    restricted.storage.insert(document)
    try:
        plain.decode_state(state["id"])
    except DeserializationError as refusal:
        with pytest.raises(DeserializationError) as also:
            restricted.decode_state(state["id"])
        assert str(also.value).split(":")[0] == str(refusal).split(":")[0]  # the same kind of refusal
        return
    assert state_difference(state, restricted.decode_state(state["id"])) is None


def test_combining_trigger_members_are_checked_before_apscheduler_imports_them(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    store = make_store(allowed_callables=["tests.helpers"])
    store.start(scheduler, "default")
    state = _state("combo")
    state["trigger"] = AndTrigger([IntervalTrigger(hours=1)])
    real, forged = b"apscheduler.triggers.interval:IntervalTrigger", b"tests.evil_module:IMPORTED"
    data = pickle.dumps(state, 2)  # unframed; the member's class reference swapped for a module:
    data = data.replace(
        b"X" + len(real).to_bytes(4, "little") + real, b"X" + len(forged).to_bytes(4, "little") + forged
    )
    assert forged in data
    foreign(store, "combo", data, None)
    sys.modules.pop("tests.evil_module", None)
    assert store.lookup_job("combo") is None
    assert "tests.evil_module" not in sys.modules
    assert "not an allowed trigger class" in store.get_quarantined_jobs()[0].message


# ----------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("inner", ["pickle", "msgpack"])
def test_signed_serializer_passes_the_kit(inner: str) -> None:
    check_serializer(SignedSerializer(inner, keys=[KEY_NEW]))


def test_signed_refuses_tampered_truncated_unsigned_and_foreign_key() -> None:
    signed = SignedSerializer("pickle", keys=[KEY_NEW])
    data = signed.dumps(sample_state())
    cases = {
        "tampered": data[:-3] + bytes([data[-3] ^ 1]) + data[-2:],
        "truncated": data[:40],
        "unsigned": pickle.dumps(sample_state()),
        "other key": SignedSerializer("pickle", keys=[KEY_OLD]).dumps(sample_state()),
        "relabelled": SignedSerializer("msgpack", keys=[KEY_NEW]).dumps(sample_state()),
        "empty": b"",
    }
    for name, candidate in cases.items():
        with audit_events() as events, pytest.raises(DeserializationError):
            signed.loads(candidate)
        assert not [event for event in events if event[0] == "pickle.find_class"], name
    assert state_difference(sample_state(), signed.loads(data)) is None


def test_key_rotation(make_store: Any, scheduler: BackgroundScheduler) -> None:
    old = make_store(serializer=SignedSerializer("pickle", keys=[KEY_OLD]))
    old.start(scheduler, "default")
    old.add_job(make_job(scheduler, "a", next_run_time=T0))
    rotated = make_store(serializer=SignedSerializer("pickle", keys=[KEY_OLD, KEY_NEW]))
    rotated.start(scheduler, "default")
    job = rotated.lookup_job("a")  # verified with the old key
    assert job is not None
    rotated.update_job(job)  # signed with the newest
    assert old.lookup_job("a") is None  # a store holding only the old key refuses the new signature
    new_only = make_store(serializer=SignedSerializer("pickle", keys=[KEY_NEW]))
    new_only.start(scheduler, "default")
    assert new_only.restore_quarantined_job("a").id == "a"  # restoring with the right key works


def test_a_signature_cannot_be_moved_to_another_job(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store(serializer=SignedSerializer("msgpack", keys=[KEY_NEW]))
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "victim", next_run_time=T0))
    store.add_job(make_job(scheduler, "other", next_run_time=T0))
    copied = find_document(store, "other")
    assert copied is not None
    foreign(store, "forged", bytes(copied["job_state"]), store.format)
    assert sorted(job.id for job in store.get_due_jobs(T0)) == ["other", "victim"]
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "forged" and "another job id, 'other'" in quarantined.message


def test_unsigned_pickle_migrates_lazily_to_signed(make_store: Any, scheduler: BackgroundScheduler) -> None:
    plain = make_store()
    plain.start(scheduler, "default")
    plain.add_job(make_job(scheduler, "a", next_run_time=T0))
    signed = make_store(serializer=SignedSerializer("pickle", keys=[KEY_NEW]), accept=["pickle"])
    signed.start(scheduler, "default")
    job = signed.lookup_job("a")
    assert job is not None
    signed.update_job(job)
    assert find_document(signed, "a")[FORMAT_FIELD] == "signed+pickle"  # type: ignore[index]
    assert plain.lookup_job("a") is None  # the unsigned store does not accept the signed format


def test_signing_keys_are_checked() -> None:
    with pytest.raises(SerializerConfigError, match="non-empty list"):
        SignedSerializer("pickle", keys=[])
    with pytest.raises(SerializerConfigError, match="non-empty list"):
        SignedSerializer("pickle", keys=KEY_NEW)  # type: ignore[arg-type]
    with pytest.raises(SerializerConfigError, match="at least 16 bytes"):
        SignedSerializer("pickle", keys=[b"short"])
    assert (
        SignedSerializer("msgpack", keys=["a text key of 32 characters...."]).format_name == "signed+msgpack"
    )


# ----------------------------------------------------------------------------- zone keys


def test_unknown_zone_keys_are_refused_before_zoneinfo_sees_them() -> None:
    serializer = MemoryJobStore(serializer="msgpack").serializer
    state = sample_state()
    data = serializer.dumps(state)
    good = msgpack.packb(msgpack.ExtType(EXT_CODES["zoneinfo"], msgpack.packb("Europe/Berlin")))
    for key in ("America/X", "../../etc/passwd", "tzdata.zoneinfo", "Europe/Berlin/.."):
        bad = msgpack.packb(msgpack.ExtType(EXT_CODES["zoneinfo"], msgpack.packb(key)))
        fields = msgpack.unpackb(data, raw=False, ext_hook=msgpack.ExtType)
        fields[6] = {"tz": msgpack.ExtType(99, b"")}
        packed = msgpack.packb(fields).replace(msgpack.packb(msgpack.ExtType(99, b"")), bad)
        with audit_events() as events, pytest.raises(DeserializationError, match="unknown zone key"):
            serializer.loads(packed)
        assert events == [], key
        assert good not in packed
