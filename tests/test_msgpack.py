"""msgpack-state: exact round trips, every trigger, errors with paths, no code on decode."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import socket
import sys
import uuid
import zoneinfo
from typing import Any

import msgpack
import pytest
import pytz
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given

from jobshelf import (
    DeserializationError,
    MongoDBJobStore,
    MsgpackStateSerializer,
    SerializationError,
    TriggerCodec,
    UnsupportedValueError,
    register_trigger,
    state_to_job,
    unregister_trigger,
)
from jobshelf.serializers.msgpack import EXT_CODES, STATE_KEYS
from jobshelf.testing import fire_times, state_difference, triggers

from .helpers import make_job

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
EASTERN = pytz.timezone("US/Eastern")


@pytest.fixture(scope="module")
def msgpack_state() -> MsgpackStateSerializer:
    return MsgpackStateSerializer()


def round_trip(serializer: MsgpackStateSerializer, state: dict[str, Any]) -> dict[str, Any]:
    restored = serializer.loads(serializer.dumps(state))
    difference = state_difference(state, restored)
    assert difference is None, difference
    return restored


def base_state(**changes: Any) -> dict[str, Any]:
    state = make_job(BackgroundScheduler(timezone=UTC)).__getstate__()
    state.update(changes)
    return state


VALUES = {
    "naive datetime": dt.datetime(1, 1, 1, 0, 0, 0, 1),
    "max datetime": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    "zoneinfo fold": dt.datetime(2021, 10, 31, 2, 30, tzinfo=BERLIN, fold=1),
    "pytz dst": EASTERN.localize(dt.datetime(2021, 7, 1, 12)),
    "pytz std": EASTERN.localize(dt.datetime(2021, 1, 1, 12)),
    "pytz lmt (unlocalized)": dt.datetime(2021, 1, 1, tzinfo=EASTERN),
    "pytz static": dt.datetime(2021, 1, 1, tzinfo=pytz.timezone("EST")),
    "pytz utc": dt.datetime(2021, 1, 1, tzinfo=pytz.utc),
    "pytz fixed": dt.datetime(2021, 1, 1, tzinfo=pytz.FixedOffset(-90)),
    "named offset": dt.datetime(2021, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, seconds=1), "X")),
    "sub-second offset": dt.timezone(dt.timedelta(microseconds=-1)),
    "utc": dt.datetime(2021, 1, 1, tzinfo=UTC),
    "zones": [BERLIN, EASTERN, pytz.utc, UTC],
    "date": dt.date(2024, 2, 29),
    "times": (dt.time(23, 59, 59, 999999), dt.time(1, tzinfo=BERLIN), dt.time(1, fold=1)),
    "timedeltas": [dt.timedelta(days=-1, microseconds=1), dt.timedelta.max, dt.timedelta.min],
    "tuple vs list": ((1, [2, (3,)]), [(), []]),
    "non-str keys": {1: "int", (1, "a"): "tuple", dt.date(2020, 1, 1): "date", None: 0, b"k": 1},
    "big ints": [2**64, -(2**63) - 1, 10**40, -(10**40), 2**64 - 1, -(2**63)],
    "floats": [math.inf, -math.inf, -0.0, 1e-308, math.nan],
    "bytes and str": [b"\x00\xff", "üñí©ødé", ""],
    "sets": [{1, "a", (2, 3)}, frozenset({dt.date(2020, 1, 1)}), set()],
    "decimal": [decimal.Decimal("1.10"), decimal.Decimal("-0"), decimal.Decimal("NaN")],
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bool is not int": [True, 1, False, 0],
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_values_round_trip_exactly(msgpack_state: MsgpackStateSerializer, value: Any) -> None:
    round_trip(msgpack_state, base_state(args=(value,), kwargs={"v": value}))


def test_pytz_zones_stay_pytz_with_the_same_variant(msgpack_state: MsgpackStateSerializer) -> None:
    value = EASTERN.localize(dt.datetime(2021, 7, 1, 12))
    restored = round_trip(msgpack_state, base_state(next_run_time=value))["next_run_time"]
    assert restored.tzinfo is value.tzinfo  # pytz's own cached variant object
    assert restored.tzname() == "EDT"
    assert restored.utcoffset() == dt.timedelta(hours=-4)


TRIGGERS = {
    "date": DateTrigger(dt.datetime(2030, 1, 1, 12, 0, 0, 5, tzinfo=BERLIN)),
    "date pytz": DateTrigger(EASTERN.localize(dt.datetime(2030, 3, 10, 1, 30))),
    "interval": IntervalTrigger(
        weeks=1, days=2, hours=3, minutes=4, seconds=5,
        start_date=dt.datetime(2030, 1, 1, tzinfo=BERLIN),
        end_date=dt.datetime(2031, 1, 1, tzinfo=BERLIN), jitter=30,
    ),
    "interval pytz start": IntervalTrigger(
        minutes=90, start_date=EASTERN.localize(dt.datetime(2030, 11, 3, 0, 30)), timezone=EASTERN
    ),
    "cron all fields": CronTrigger(
        year="2030-2040/2", month="jan-jun", day="last", week="1-40", day_of_week="mon-fri",
        hour="*/3", minute="5,35", second="0-10/5", start_date=dt.datetime(2030, 1, 1),
        end_date=dt.datetime(2039, 1, 1), timezone=BERLIN, jitter=10,
    ),
    "cron weekday position": CronTrigger(day="2nd wed,last fri", hour=9, timezone="America/New_York"),
    "cron 0-0/1 (str() loses it)": CronTrigger(day_of_week="0-0/1", minute="0-0/1", timezone=BERLIN),
    "crontab": CronTrigger.from_crontab("*/15 9-17 * * 1-5", timezone=UTC),
    "calendar": CalendarIntervalTrigger(
        years=1, months=2, weeks=1, days=3, hour=2, minute=30, second=15,
        start_date=dt.date(2030, 1, 31), end_date=dt.date(2040, 1, 1), timezone=BERLIN, jitter=5,
    ),
    "and": AndTrigger([CronTrigger(hour=3, timezone=UTC), CronTrigger(day_of_week="sat", timezone=UTC)]),
    "or nested": OrTrigger(
        [
            DateTrigger(dt.datetime(2030, 1, 1, tzinfo=UTC)),
            AndTrigger([CronTrigger(minute=0, timezone=BERLIN), CronTrigger(hour="9-17", timezone=BERLIN)],
                       jitter=3),
        ],
        jitter=7,
    ),
}  # fmt: skip


@pytest.mark.parametrize("trigger", list(TRIGGERS.values()), ids=list(TRIGGERS))
def test_every_trigger_round_trips_with_the_same_schedule(
    msgpack_state: MsgpackStateSerializer, trigger: BaseTrigger
) -> None:
    restored = round_trip(msgpack_state, base_state(trigger=trigger))["trigger"]
    assert type(restored) is type(trigger)
    for now in (dt.datetime(2030, 1, 1, tzinfo=UTC), dt.datetime(2035, 6, 15, 13, tzinfo=UTC)):
        assert state_difference(fire_times(trigger, now, 5), fire_times(restored, now, 5)) is None


def test_unsupported_value_names_the_path(msgpack_state: MsgpackStateSerializer) -> None:
    with socket.socket() as conn:
        with pytest.raises(UnsupportedValueError) as info:
            msgpack_state.dumps(base_state(kwargs={"conn": conn}))
        assert str(info.value).startswith("kwargs['conn']: socket is not supported by msgpack")
        assert info.value.path == "kwargs['conn']"
        with pytest.raises(UnsupportedValueError, match=r"^args\[1\]\[0\]<key <socket"):
            msgpack_state.dumps(base_state(args=(1, [{"k": 1, conn: 2}])))
    with pytest.raises(UnsupportedValueError, match=r"kwargs\['f'\]: function .*cloudpickle"):
        msgpack_state.dumps(base_state(kwargs={"f": lambda: 0}))


def test_store_refuses_unsupported_values_and_writes_nothing(
    mongo_client: Any, database: str, scheduler: BackgroundScheduler
) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client, serializer="msgpack")
    with socket.socket() as conn, pytest.raises(SerializationError) as info:
        store.add_job(make_job(scheduler, "net", kwargs={"conn": conn}))
    assert "job 'net'" in str(info.value)
    assert "kwargs['conn']: socket is not supported by msgpack" in str(info.value)
    assert isinstance(info.value.__cause__, UnsupportedValueError)
    assert store.collection.count_documents({}) == 0


class EveryOtherDay(BaseTrigger):
    """A custom trigger a user would write."""

    def __init__(self, start: dt.datetime) -> None:
        self.start = start

    def get_next_fire_time(self, previous_fire_time: Any, now: dt.datetime) -> dt.datetime:
        base = previous_fire_time or self.start
        while base <= now:
            base += dt.timedelta(days=2)
        return base

    def __getstate__(self) -> dict[str, Any]:
        return {"start": self.start}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.start = state["start"]


class Unregistered(EveryOtherDay):
    pass


def test_custom_triggers_need_registration_and_then_round_trip() -> None:
    trigger = EveryOtherDay(dt.datetime(2030, 1, 1, tzinfo=BERLIN))
    with pytest.raises(UnsupportedValueError, match="register_trigger"):
        MsgpackStateSerializer().dumps(base_state(trigger=Unregistered(trigger.start)))

    local = MsgpackStateSerializer(
        triggers=(
            TriggerCodec(
                "every-other-day", EveryOtherDay, lambda t: [t.start], lambda p: EveryOtherDay(p[0])
            ),
        )
    )
    data = local.dumps(base_state(trigger=trigger))
    with pytest.raises(DeserializationError, match="trigger 'every-other-day' is not registered"):
        MsgpackStateSerializer().loads(data)
    round_trip(local, base_state(trigger=trigger))

    register_trigger(EveryOtherDay, "every-other-day", lambda t: [t.start], lambda p: EveryOtherDay(p[0]))
    try:
        restored = round_trip(MsgpackStateSerializer(), base_state(trigger=trigger))["trigger"]
        assert restored.get_next_fire_time(None, trigger.start) == trigger.start + dt.timedelta(days=2)
    finally:
        unregister_trigger("every-other-day")  # no registration leaks into other tests
    with pytest.raises(TypeError, match="not a trigger class"):
        register_trigger(dict, "dict", list, dict)


IMPORTS: list[str] = []
WATCHING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if WATCHING and event == "import":
        IMPORTS.append(str(args[0]))


def test_decoding_imports_nothing(msgpack_state: MsgpackStateSerializer) -> None:
    sys.addaudithook(_audit)
    trigger = OrTrigger([TRIGGERS["cron all fields"], TRIGGERS["and"], TRIGGERS["calendar"]])
    state = base_state(
        func="tests.evil_module:IMPORTED",
        trigger=trigger,
        next_run_time=EASTERN.localize(dt.datetime(2030, 1, 1)),
        kwargs={"when": dt.datetime(2030, 1, 1, tzinfo=BERLIN), "d": decimal.Decimal(1), "u": uuid.uuid4()},
    )
    data = msgpack_state.dumps(state)
    # a payload naming a class to import: APScheduler's AndTrigger.__setstate__ would import it
    evil_trigger = msgpack.ExtType(EXT_CODES["trigger"], msgpack.packb(["tests.evil_module:IMPORTED", 1]))
    evil = msgpack.packb(["x"] * 3 + [evil_trigger] + ["x"] * 8)
    sys.modules.pop("tests.evil_module", None)

    WATCHING.append(True)
    try:
        restored = msgpack_state.loads(data)
        with pytest.raises(DeserializationError, match="not registered"):
            msgpack_state.loads(evil)
    finally:
        WATCHING.clear()
    assert IMPORTS == []
    assert "tests.evil_module" not in sys.modules
    assert state_difference(state, restored) is None

    # the hook does see imports: APScheduler's own restore of the same job imports its callable
    WATCHING.append(True)
    try:
        state_to_job(restored)
    finally:
        WATCHING.clear()
    assert "tests.evil_module" in IMPORTS


def test_schema_is_readable_without_jobshelf(msgpack_state: MsgpackStateSerializer) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=BERLIN)
    data = msgpack_state.dumps(base_state(next_run_time=when, args=(1, "a")))
    raw = msgpack.unpackb(data, strict_map_key=False)  # plain msgpack, no hooks
    assert isinstance(raw, list)
    assert len(raw) == len(STATE_KEYS)
    fields = dict(zip(STATE_KEYS, raw))
    assert fields["version"] == 1
    assert fields["func"] == "tests.helpers:dummy_job"
    assert fields["args"] == msgpack.ExtType(EXT_CODES["tuple"], msgpack.packb([1, "a"]))
    assert fields["trigger"].code == EXT_CODES["trigger"]
    assert msgpack.unpackb(fields["trigger"].data)[0] == "date"
    next_run = fields["next_run_time"]
    assert next_run.code == EXT_CODES["datetime"]
    assert next_run.data[:12] == bytes.fromhex("07ee 01 02 03 04 05 00000006 00".replace(" ", ""))
    zone = msgpack.unpackb(next_run.data[12:])
    assert zone == msgpack.ExtType(EXT_CODES["zoneinfo"], msgpack.packb("Europe/Berlin"))


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x80", b"\xc7\x01\x63\x00", b"\x92\x01\x02"])
def test_garbage_raises_deserialization_error(msgpack_state: MsgpackStateSerializer, garbage: bytes) -> None:
    with pytest.raises(DeserializationError):
        from jobshelf.testing import load_state

        load_state(msgpack_state, garbage)


def test_cron_fields_are_compared_and_encoded_losslessly(msgpack_state: MsgpackStateSerializer) -> None:
    lossy_text = CronTrigger(day_of_week="0-0/1", timezone=UTC)
    reparsed = CronTrigger(day_of_week=str(lossy_text.fields[4]), timezone=UTC)
    assert str(lossy_text.fields[4]) == str(reparsed.fields[4]) == "0/1"  # APScheduler's str() loses it
    assert state_difference(lossy_text, reparsed) is not None
    restored = round_trip(msgpack_state, base_state(trigger=lossy_text))["trigger"]
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert fire_times(restored, now, 3) == fire_times(lossy_text, now, 3) != fire_times(reparsed, now, 3)


def test_a_failed_encoding_leaves_no_residue(msgpack_state: MsgpackStateSerializer) -> None:
    good = base_state(args=((1, (2, 3)),), kwargs={"when": dt.datetime(2030, 1, 1, tzinfo=BERLIN)})
    expected = msgpack_state.dumps(good)
    with socket.socket() as conn, pytest.raises(UnsupportedValueError):
        msgpack_state.dumps(base_state(args=((1, (2, conn)),)))  # fails three packers deep
    assert msgpack_state.dumps(good) == expected


@given(trigger=triggers())
def test_rebuilt_triggers_have_every_slot_of_apschedulers_own_restore(trigger: BaseTrigger) -> None:
    """msgpack-state rebuilds the hot triggers slot by slot; APScheduler's __setstate__ is the truth."""
    restored = MsgpackStateSerializer().loads(MsgpackStateSerializer().dumps(base_state(trigger=trigger)))
    _assert_same_slots(trigger, restored["trigger"])


def _assert_same_slots(original: Any, restored: Any) -> None:
    cls = type(original)
    assert type(restored) is cls
    reference = cls.__new__(cls)
    reference.__setstate__(original.__getstate__())
    declared = [getattr(klass, "__slots__", ()) for klass in cls.__mro__]
    slots = [slot for names in declared for slot in ((names,) if isinstance(names, str) else names)]
    assert slots, cls
    for slot in slots:
        expected, actual = getattr(reference, slot), getattr(restored, slot)
        if slot == "triggers":
            assert len(expected) == len(actual)
            for member, restored_member in zip(original.triggers, actual):
                _assert_same_slots(member, restored_member)
        elif slot == "fields":
            assert [(f.name, str(f), f.is_default) for f in expected] == [
                (f.name, str(f), f.is_default) for f in actual
            ]
        else:
            assert state_difference(expected, actual, slot) is None
