"""A pickle is a program: every global the restricted unpickler admits is harmless under any argument
(issue 14, parts 1 and 2).

Each admitted global gets a hostile argument here, written into a job state by hand; each must be
quarantined with a ``DeserializationError`` naming the job and the global, while an audit hook
sees no import, exec, compile, os.system or process start, and the other jobs go on.
"""

from __future__ import annotations

import datetime as dt
import pickle
import struct
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron.expressions import RangeExpression
from apscheduler.triggers.interval import IntervalTrigger

from jobshelf import MemoryJobStore
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.serializers.pickle import restricted_globals
from jobshelf.testing import sample_state, state_difference
from tests.trustapp import jobs

from .forged_pickles import DUE, build, call, dict_of, glob, job_state, new, stack_global, text, value
from .helpers import T0, audit_events, insert_document, make_job

APP = "tests.trustapp.jobs"
HUGE = 1_500_000_000
SYSTEM = "__import__('os').system('touch {path}')"


def _store(scheduler: BackgroundScheduler, **options: Any) -> Any:
    store = MemoryJobStore(allowed_callables=["tests.trustapp"], **options)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", func=jobs.job, next_run_time=T0))
    return store


def _insert(store: Any, job_id: str, data: bytes, fmt: str = "pickle") -> None:
    insert_document(
        store, {"_id": job_id, "next_run_time": DUE.timestamp(), "job_state": data, FORMAT_FIELD: fmt}
    )


def assert_quarantined_unrun(store: Any, job_id: str, *fragments: str) -> str:
    """The forged job is quarantined with a message naming it and the fragments; the good job is
    due; nothing was imported, compiled, executed or started."""
    with audit_events() as events:
        due = [job.id for job in store.get_due_jobs(DUE)]
    assert due == ["good"]
    assert events == [], events
    (quarantined,) = [job for job in store.get_quarantined_jobs() if job.id == job_id]
    assert quarantined.error_type == "jobshelf.DeserializationError"
    assert quarantined.message.startswith(f"job {job_id!r} (pickle): ")
    for fragment in fragments:
        assert fragment in quarantined.message, quarantined.message
    return str(quarantined.message)


# ----------------------------------------------------------------------------- the examples


def test_the_dotted_global_gadget_through_an_allowed_module(
    scheduler: BackgroundScheduler, tmp_path: Path
) -> None:
    """Issue 14: protocol 4's STACK_GLOBAL of ``myapp.jobs`` + ``__builtins__.get`` fetched the
    builtins' ``dict.get``, then ``eval``, and ran it while decoding."""
    store = _store(scheduler)
    evil = stack_global(APP, "__builtins__.get")
    payload = call(call(evil, text("eval")), text(SYSTEM.format(path=tmp_path / "pwned")))
    _insert(store, "evil", job_state("evil", payload))
    assert_quarantined_unrun(store, "evil", "tests.trustapp.jobs.__builtins__.get is not part of a job state")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("codec", ["hz", "zlib", "base64", "rot13", "latin-1"])
def test_codecs_encode_never_looks_a_codec_up(scheduler: BackgroundScheduler, codec: str) -> None:
    """``_codecs.encode("x", "hz")`` imported encodings.hz, _codecs_cn and _multibytecodec."""
    for name in ("encodings.hz", "_codecs_cn", "_multibytecodec", "encodings.zlib_codec"):
        sys.modules.pop(name, None)
    store = _store(scheduler)
    _insert(store, "codec", job_state("codec", call(glob("_codecs", "encode"), text("x"), text(codec))))
    assert_quarantined_unrun(store, "codec", "_codecs.encode(str, str) is refused")
    assert "encodings.hz" not in sys.modules and "_codecs_cn" not in sys.modules


def test_bytearray_of_a_huge_size_from_a_tiny_state(scheduler: BackgroundScheduler) -> None:
    """``builtins.bytearray(1_500_000_000)`` from a 35-byte pickle took 1.4 GiB."""
    tiny = b"\x80\x02c__builtin__\nbytearray\nJ\x00/\x68\x59\x85R."
    assert len(tiny) < 36 and struct.unpack("<i", tiny[-7:-3])[0] == HUGE
    store = _store(scheduler)
    _insert(store, "tiny", tiny)
    _insert(store, "in-state", job_state("in-state", call(glob("__builtin__", "bytearray"), value(HUGE))))
    tracemalloc.start()
    try:
        store.get_due_jobs(DUE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert_quarantined_unrun(store, "in-state", "bytearray(int) is refused")
    assert_quarantined_unrun(store, "tiny", "bytearray(int) is refused")


# ----------------------------------------------------------------------------- every admitted global

RANGE = call(glob("__builtin__", "xrange"), value(10**12))
#: For each admitted global (by its name, whichever module spells it), a hostile use of it (given
#: the bytes that push it) and what the refusal says.
HOSTILE: dict[str, tuple[Any, str]] = {
    "set": (lambda g: call(g, RANGE), "set(range) is refused"),
    "frozenset": (lambda g: call(g, RANGE), "frozenset(range) is refused"),
    "bytearray": (lambda g: call(g, value(HUGE)), "bytearray(int) is refused"),
    "bytes": (lambda g: call(g, value(HUGE)), "bytes(int) is refused"),
    "complex": (lambda g: call(g, text("1" * 100)), "complex(str) is refused"),
    "slice": (lambda g: call(g, text("x")), "slice(str) is refused"),
    "range": (lambda g: call(g, value(1.5)), "range(float) is refused"),
    "object": (lambda g: call(g, value(1)), "object(int) is refused"),
    "getattr": (
        lambda g: call(g, glob("zoneinfo", "ZoneInfo"), text("clear_cache")),
        "getattr(type, str) is refused",
    ),
    "encode": (lambda g: call(g, text("x"), text("hz")), "_codecs.encode(str, str) is refused"),
    "_reconstructor": (
        lambda g: call(g, glob("uuid", "UUID"), glob("__builtin__", "bytearray"), value(HUGE)),
        "copyreg._reconstructor(type, type, int) is refused",
    ),
    "datetime": (lambda g: call(g, value(b"x" * 4096)), "datetime.datetime(bytes) is refused"),
    "date": (lambda g: call(g, value(10**100)), "datetime.date: OverflowError"),
    "time": (lambda g: call(g, RANGE), "datetime.time(range) is refused"),
    "timedelta": (lambda g: call(g, value(10**100)), "datetime.timedelta: OverflowError"),
    "timezone": (lambda g: call(g, text("x")), "datetime.timezone(str) is refused"),
    "tzinfo": (lambda g: call(g, value(1)), "datetime.tzinfo(int) is refused"),
    "ZoneInfo": (lambda g: call(g, text("../../../../etc/passwd")), "zoneinfo.ZoneInfo(str) is refused"),
    "ZoneInfo._unpickle": (
        lambda g: call(g, text("America/X"), value(1)),
        "ZoneInfo._unpickle(str, int) is refused",
    ),
    "Decimal": (lambda g: call(g, text("9" * 5000)), "of at most 4300 characters"),
    "SafeUUID": (lambda g: call(g, value(5)), "uuid.SafeUUID(int) is refused"),
    "OrderedDict": (lambda g: call(g, value(((1, 2),))), "collections.OrderedDict(tuple) is refused"),
    "deque": (lambda g: call(g, RANGE), "collections.deque(range) is refused"),
    "_p": (lambda g: call(g, text("../../../etc/passwd")), "unknown pytz zone"),
    "_UTC": (lambda g: call(g, value(1)), "pytz._UTC(int) is refused"),
    "FixedOffset": (lambda g: call(g, value(10**6)), "pytz.FixedOffset: ValueError"),
    "UUID": (lambda g: build(new(g), dict_of(int=value(2**200))), "uuid.UUID's state is refused"),
}


def _hostile(entry: str) -> tuple[bytes, str]:
    module, name = entry.split(":")
    pushed = stack_global(module, name)
    if module.startswith("apscheduler.triggers"):  # a class: never called, built without arguments
        expected = f"REDUCE on the class {module}.{name}: decoding calls only admitted constructors"
        return call(pushed, value(1)), expected
    make, expected = HOSTILE[name]
    return make(pushed), expected


def test_every_admitted_global_has_a_hostile_case() -> None:
    names = {entry.split(":")[1] for entry in restricted_globals() if not entry.startswith("apscheduler.")}
    assert names == set(HOSTILE)
    assert len(restricted_globals()) > 40  # cron fields, expressions and triggers are listed too


@pytest.mark.parametrize("entry", restricted_globals())
def test_an_admitted_global_with_a_hostile_argument_is_refused(
    scheduler: BackgroundScheduler, entry: str
) -> None:
    payload, expected = _hostile(entry)
    store = _store(scheduler)
    _insert(store, "hostile", job_state("hostile", payload))
    tracemalloc.start()
    try:
        message = assert_quarantined_unrun(store, "hostile", expected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, message


# ----------------------------------------------------------------------------- instructions with effects


def test_build_never_changes_a_class(scheduler: BackgroundScheduler) -> None:
    """BUILD on a global sets class attributes for every job in the process (C unpickler: any
    class without ``__setstate__``, such as APScheduler's cron expressions)."""
    original = RangeExpression.get_next_value
    store = _store(scheduler)
    for job_id, target in (
        ("expression", glob("apscheduler.triggers.cron.expressions", "RangeExpression")),
        ("app-class", glob(APP, "Jobs")),
        ("trigger", glob("apscheduler.triggers.interval", "IntervalTrigger")),
    ):
        state = b"N" + dict_of(get_next_value=glob("__builtin__", "set")) + b"\x86"
        _insert(store, job_id, job_state(job_id, build(target, state)))
    with audit_events() as events:
        assert [job.id for job in store.get_due_jobs(DUE)] == ["good"]
    assert events == []
    assert RangeExpression.get_next_value is original
    assert "get_next_value" not in vars(jobs.Jobs) and "get_next_value" not in vars(IntervalTrigger)
    for quarantined in store.get_quarantined_jobs():
        assert "BUILD on the class" in quarantined.message


def test_build_never_changes_a_shared_zone_or_enum_member(scheduler: BackgroundScheduler) -> None:
    """pytz zones and enum members come from process-wide caches: filling one in would change
    every job that uses it."""
    import pytz

    berlin = pytz.timezone("Europe/Berlin")
    store = _store(scheduler)
    shared = {
        "zone": call(glob("pytz", "_p"), text("Europe/Berlin"), value(3600), value(0), text("CET")),
        "enum": call(glob("uuid", "SafeUUID"), value(0)),
    }
    for job_id, target in shared.items():
        _insert(
            store, job_id, job_state(job_id, build(target, dict_of(zone=text("UTC"), _utcoffset=value(0))))
        )
    assert [job.id for job in store.get_due_jobs(DUE)] == ["good"]
    assert berlin.zone == "Europe/Berlin" and pytz.timezone("Europe/Berlin") is berlin
    for quarantined in store.get_quarantined_jobs():
        assert "only objects this pickle made are filled in" in quarantined.message


def test_an_allowed_function_is_never_called_while_decoding(scheduler: BackgroundScheduler) -> None:
    """Allowed functions may be named (as a job's callable, or in its arguments), never called
    by the pickle: decoding builds, it does not run."""
    jobs.RAN.clear()
    store = _store(scheduler)
    _insert(store, "called", job_state("called", call(glob(APP, "job"), text("while decoding"))))
    _insert(store, "named", job_state("named", glob(APP, "job")))
    due = store.get_due_jobs(DUE)
    assert sorted(job.id for job in due) == ["good", "named"]
    assert jobs.RAN == []
    assert next(job for job in due if job.id == "named").args == (jobs.job,)
    (quarantined,) = store.get_quarantined_jobs()
    assert "REDUCE on a function: decoding calls only admitted constructors" in quarantined.message


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("inst", b"(" + value(HUGE) + b"i__builtin__\nbytearray\n", "bytearray(int) is refused"),
        ("obj", b"(" + glob("__builtin__", "bytearray") + value(HUGE) + b"o", "bytearray(int) is refused"),
        ("inst-function", b"(" + text("x") + f"i{APP}\njob\n".encode(), "INST/OBJ on a function"),
        (
            "newobj-builtin",
            new(glob("__builtin__", "bytes"), value(HUGE)),
            "NEWOBJ on the class builtins.bytes",
        ),
        ("newobj-ex", glob("uuid", "UUID") + value(()) + dict_of(x=value(1)) + b"\x92", "with arguments"),
        ("memo-put", b"N" + b"p99999999999999999999\n", "PUT with memo index"),
        ("bytearray8", b"\x96" + struct.pack("<Q", HUGE), "BYTEARRAY8 claims 1500000000 bytes"),
        ("text-int", b"I" + b"9" * 5000 + b"\n", "INT with a number of 5001 digits"),
        ("persistent-id", text("x") + b"Q", "persistent ids"),
        ("extension", b"\x82\x01", "extension codes"),
        (
            "append-to-a-class",
            glob("collections", "deque") + value(1) + b"a",
            "APPEND on the class collections.deque",
        ),
        ("setitem-on-a-zone", call(glob("pytz", "_UTC")) + value(1) + value(2) + b"s", "SETITEM on a UTC"),
    ],
)
def test_instructions_with_effects_are_judged(
    scheduler: BackgroundScheduler, name: str, payload: bytes, expected: str
) -> None:
    store = _store(scheduler)
    _insert(store, name, job_state(name, payload))
    assert_quarantined_unrun(store, name, expected)


def test_a_huge_memo_index_costs_nothing(scheduler: BackgroundScheduler) -> None:
    """A 9-byte pickle storing into memo index 200,000,000 took 3 GiB with the C unpickler."""
    store = _store(scheduler)
    payload = b"N" + b"r" + struct.pack("<I", 4_000_000_000)  # LONG_BINPUT: legal, and now a dict entry
    _insert(store, "memo", job_state("memo", payload))
    tracemalloc.start()
    try:
        due = store.get_due_jobs(DUE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted(job.id for job in due) == ["good", "memo"]
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        # 200,000 int keys sharing one hash: CPython's dict insertion would take minutes
        (
            "colliding-dict",
            b"}(" + b"".join(value(k * sys.hash_info.modulus) + b"N" for k in range(1, 200)) + b"u",
        ),
        (
            "colliding-set",
            b"\x8f(" + b"".join(value(k * sys.hash_info.modulus) for k in range(1, 200)) + b"\x90",
        ),
        # a tuple that doubles at each level through the memo: hashing it walks 2**60 elements
        ("shared-tuple-key", value(1) + b"\x85p0\n0" + b"g0\ng0\n\x86p0\n0" * 60 + b"}" + b"g0\n" + b"Ns"),
    ],
)
def test_keys_whose_hashing_costs_more_than_their_size_are_refused(
    scheduler: BackgroundScheduler, name: str, payload: bytes
) -> None:
    store = _store(scheduler)
    _insert(store, name, job_state(name, payload))
    message = assert_quarantined_unrun(store, name)
    assert "share a hash" in message or "expands to more than 4096 elements" in message


def test_memory_stays_linear_in_the_state_size(scheduler: BackgroundScheduler) -> None:
    """Whatever a pickle holds, decoding takes at most 256 times its size plus 8 MiB (the budget
    every instruction is charged against); pickle's densest objects, empty sets, take about 150."""
    store = _store(scheduler, max_state_bytes=1024 * 1024)
    bodies = {
        "empty-sets": b"(" + b"\x8f" * 400_000 + b"l",
        "empty-dicts": b"(" + b"}\x94" * 200_000 + b"l",
        "memoized": b"(" + b"N\x94" * 200_000 + b"l",
    }
    for job_id, body in bodies.items():
        data = job_state(job_id, body)
        _insert(store, job_id, data)
        tracemalloc.start()
        try:
            store.decode_state(job_id)
            peak = tracemalloc.get_traced_memory()[1]
        except Exception:
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= 256 * len(data) + 8 * 1024 * 1024, job_id


# ----------------------------------------------------------------------------- what must still work


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_real_job_states_of_every_protocol_decode_unchanged(
    scheduler: BackgroundScheduler, protocol: int
) -> None:
    import collections
    import decimal
    import uuid
    import zoneinfo

    import pytz

    state = sample_state()
    state.update(
        id="real",
        func=f"{APP}:job",
        args=(
            {1, 2}, frozenset([3]), b"x", b"", bytearray(b"ab"), bytearray(), 1 + 2j, slice(1, 2), range(3),
            uuid.UUID(int=7), decimal.Decimal("1.5"), collections.OrderedDict(a=1),
            collections.deque([1], maxlen=3), dt.date(2020, 1, 1),
            dt.time(1, 2, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")), dt.timedelta(1),
            pytz.timezone("Europe/Berlin").localize(dt.datetime(2030, 3, 31, 3, 30)), pytz.utc,
            pytz.FixedOffset(60), jobs.Jobs, jobs.job,
        ),
    )  # fmt: skip
    store = _store(scheduler)
    _insert(store, "real", pickle.dumps(state, protocol))
    with audit_events() as events:
        decoded = store.decode_state("real")
    assert events == []  # protocol 0's text opcodes included: nothing imported
    assert state_difference(state, decoded) is None
    assert decoded["args"][-2:] == (jobs.Jobs, jobs.job)
