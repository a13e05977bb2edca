"""Plain-data encodings of the values in a job state: the layer every plain-data format shares.

A value that is not plain data (``None``, bool, int, float, str, bytes, list, dict) is *reduced* to
a ``(kind, payload)`` pair whose payload is plain data or further values to reduce, and
*constructed* back from it. Constructing runs no code from the payload: it imports nothing and
instantiates only the types listed here and the trigger classes registered with
:func:`register_trigger`. msgpack-state maps each kind to an ext type code; a JSON format can map it
to ``{"$kind": payload}``. The kinds and payloads are documented in the README ("msgpack-state
schema").
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import uuid
import weakref
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, BaseCombiningTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import astimezone

from .._cron import field_expression
from .._exceptions import DeserializationError, UnsupportedValueError

try:  # pytz is optional: imported here, once, never while decoding
    import pytz
    import pytz.tzinfo
except ImportError:  # pragma: no cover - exercised only without pytz installed
    pytz = None

__all__ = [
    "KINDS",
    "StateMarshaller",
    "TriggerCodec",
    "default_marshaller",
    "register_trigger",
]

_MICROSECOND = dt.timedelta(microseconds=1)
_ZERO = dt.timedelta(0)


@dataclass(frozen=True)
class TriggerCodec:
    """How one trigger class becomes plain data and back.

    :ivar name: the name stored in the payload (unique; never imported)
    :ivar cls: the exact trigger class (subclasses need their own registration)
    :ivar to_state: trigger -> payload made of supported values
    :ivar from_state: payload -> trigger
    """

    name: str
    cls: type
    to_state: Callable[[Any], Any]
    from_state: Callable[[Any], Any]


# ----------------------------------------------------------------------------- values


def _reduce_datetime(value: dt.datetime) -> tuple[str, Any]:
    return "datetime", [
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, value.fold, value.tzinfo,
    ]  # fmt: skip


def _construct_datetime(payload: list[Any]) -> dt.datetime:
    year, month, day, hour, minute, second, microsecond, fold, tz = payload
    return dt.datetime(year, month, day, hour, minute, second, microsecond, tz, fold=fold)


def _reduce_time(value: dt.time) -> tuple[str, Any]:
    return "time", [value.hour, value.minute, value.second, value.microsecond, value.fold, value.tzinfo]


def _construct_time(payload: list[Any]) -> dt.time:
    hour, minute, second, microsecond, fold, tz = payload
    return dt.time(hour, minute, second, microsecond, tz, fold=fold)


def _reduce_fixed_offset(value: dt.timezone) -> tuple[str, Any]:
    args = fixed_offset_args(value)
    offset = args[0] // _MICROSECOND
    return "timezone", [offset] if len(args) == 1 else [offset, args[1]]


def fixed_offset_args(value: dt.timezone) -> tuple[Any, ...]:
    """``(offset,)`` or ``(offset, name)``: a :class:`datetime.timezone` with its explicit name."""
    return value.__getinitargs__()  # type: ignore[attr-defined,no-any-return]


def _construct_fixed_offset(payload: list[Any]) -> dt.timezone:
    offset = dt.timedelta(microseconds=payload[0])
    if len(payload) == 1:
        return dt.timezone.utc if offset == _ZERO else dt.timezone(offset)
    return dt.timezone(offset, payload[1])


def _reduce_zoneinfo(value: zoneinfo.ZoneInfo) -> tuple[str, Any]:
    if value.key is None:
        raise TypeError("a ZoneInfo built from a file has no key; use ZoneInfo('Area/City')")
    return "zoneinfo", value.key


def _reduce_pytz(value: dt.tzinfo) -> tuple[str, Any]:
    if pytz is None:  # pragma: no cover
        raise TypeError("pytz is not installed")
    if isinstance(value, pytz.tzinfo.DstTzInfo):
        # the zone plus the fixed-offset variant, as pytz's own pickle support stores it
        return "pytz", [
            value.zone,
            int(value._utcoffset.total_seconds()),
            int(value._dst.total_seconds()),
            value._tzname,
        ]
    if isinstance(value, pytz.tzinfo.StaticTzInfo) or value is pytz.utc:
        return "pytz", [value.zone]
    if isinstance(value, pytz._FixedOffset):
        return "pytz", [None, value._minutes]
    raise TypeError(f"unknown pytz zone type {type(value).__qualname__}")


def _construct_pytz(payload: list[Any]) -> dt.tzinfo:
    if pytz is None:
        raise DeserializationError(
            'this job holds a pytz time zone but pytz is not installed: pip install "jobshelf[pytz]"'
        )
    zone: dt.tzinfo = pytz.FixedOffset(payload[1]) if payload[0] is None else pytz.tzinfo.unpickler(*payload)
    return zone


_REDUCERS: dict[type, Callable[[Any], tuple[str, Any]]] = {
    tuple: lambda value: ("tuple", list(value)),
    set: lambda value: ("set", list(value)),
    frozenset: lambda value: ("frozenset", list(value)),
    int: lambda value: ("int", str(value)),  # only ints too large for the format's native ints
    decimal.Decimal: lambda value: ("decimal", str(value)),
    uuid.UUID: lambda value: ("uuid", str(value)),
    dt.datetime: _reduce_datetime,
    dt.date: lambda value: ("date", [value.year, value.month, value.day]),
    dt.time: _reduce_time,
    dt.timedelta: lambda value: ("timedelta", [value.days, value.seconds, value.microseconds]),
    dt.timezone: _reduce_fixed_offset,
    zoneinfo.ZoneInfo: _reduce_zoneinfo,
}

_CONSTRUCTORS: dict[str, Callable[[Any], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "datetime": _construct_datetime,
    "date": lambda payload: dt.date(*payload),
    "time": _construct_time,
    "timedelta": lambda payload: dt.timedelta(*payload),
    "timezone": _construct_fixed_offset,
    "zoneinfo": zoneinfo.ZoneInfo,
    "pytz": _construct_pytz,
}

# ----------------------------------------------------------------------------- triggers


def _setstate(cls: Any, version: int, **state: Any) -> Any:
    trigger = cls.__new__(cls)
    trigger.__setstate__({"version": version, **state})
    return trigger


@functools.lru_cache(maxsize=4096)
def _cron_fields(expressions: tuple[str, ...], defaults: int) -> tuple[Any, ...]:
    # Fields are never changed after they are compiled, so equal ones are shared between triggers.
    return tuple(
        CronTrigger.FIELDS_MAP[name](name, expression, bool(defaults >> index & 1))
        for index, (name, expression) in enumerate(zip(CronTrigger.FIELD_NAMES, expressions))
    )


# id(field) -> (field, its expression): rendering a field is the costly part of
# encoding a CronTrigger. The entry holds the field, so its id cannot be reused while cached.
_EXPRESSIONS: dict[int, tuple[Any, str]] = {}


def _cron_expression(field: Any) -> str:
    entry = _EXPRESSIONS.get(id(field))
    if entry is not None and entry[0] is field:
        return entry[1]
    if len(_EXPRESSIONS) >= 4096:
        _EXPRESSIONS.clear()
    expression = field_expression(field)
    _EXPRESSIONS[id(field)] = (field, expression)
    return expression


def _cron_to_state(trigger: CronTrigger) -> list[Any]:
    fields = trigger.fields
    if [field.name for field in fields] != list(CronTrigger.FIELD_NAMES):
        raise TypeError("CronTrigger fields are not in the standard order")
    defaults = sum(1 << index for index, field in enumerate(fields) if field.is_default)
    expressions = [_cron_expression(field) for field in fields]
    return [trigger.timezone, trigger.start_date, trigger.end_date, expressions, defaults, trigger.jitter]


def _cron_from_state(payload: list[Any]) -> CronTrigger:
    timezone, start_date, end_date, expressions, defaults, jitter = payload
    if len(expressions) != len(CronTrigger.FIELD_NAMES):
        raise ValueError(f"a CronTrigger has {len(CronTrigger.FIELD_NAMES)} fields")
    fields = list(_cron_fields(tuple(expressions), defaults))
    trigger = CronTrigger.__new__(CronTrigger)
    trigger.timezone = astimezone(timezone)  # as CronTrigger.__setstate__ does
    trigger.start_date = start_date
    trigger.end_date = end_date
    trigger.fields = fields
    trigger.jitter = jitter
    return trigger


# The hot triggers are rebuilt slot by slot, as their __setstate__ does (DateTrigger v1,
# IntervalTrigger v2, CronTrigger v2): building a state dict and calling __setstate__ costs more
# than the rest of decoding them. tests/test_msgpack.py checks every slot against APScheduler's
# own __setstate__.


def _date_from_state(payload: list[Any]) -> DateTrigger:
    (run_date,) = payload
    trigger = DateTrigger.__new__(DateTrigger)
    trigger.run_date = run_date
    return trigger


def _interval_from_state(payload: list[Any]) -> IntervalTrigger:
    timezone, start_date, end_date, interval, jitter = payload
    trigger = IntervalTrigger.__new__(IntervalTrigger)
    trigger.timezone = timezone
    trigger.start_date = start_date
    trigger.end_date = end_date
    trigger.interval = interval
    trigger.interval_length = interval.total_seconds()
    trigger.jitter = jitter
    return trigger


def _calendar_to_state(trigger: CalendarIntervalTrigger) -> list[Any]:
    state = trigger.__getstate__()
    return [*state["interval"], *state["time"], state["start_date"], state["end_date"],
            state["timezone"], state["jitter"]]  # fmt: skip


def _calendar_from_state(payload: list[Any]) -> CalendarIntervalTrigger:
    return _setstate(
        CalendarIntervalTrigger, 1, interval=payload[0:4], time=payload[4:7],
        start_date=payload[7], end_date=payload[8], timezone=payload[9], jitter=payload[10],
    )  # fmt: skip


def _combining_from_state(cls: Any) -> Callable[[Any], Any]:
    def from_state(payload: list[Any]) -> Any:
        # APScheduler's __setstate__ would import each member's class by name: build directly.
        members, jitter = payload
        if not all(isinstance(member, BaseTrigger) for member in members):
            raise TypeError(f"{cls.__name__} members must be triggers")
        trigger = cls.__new__(cls)
        trigger.triggers = list(members)
        trigger.jitter = jitter
        return trigger

    return from_state


def _combining_to_state(trigger: BaseCombiningTrigger) -> list[Any]:
    return [list(trigger.triggers), trigger.jitter]


_BUILTIN_TRIGGERS = (
    TriggerCodec("date", DateTrigger, lambda t: [t.run_date], _date_from_state),
    TriggerCodec("interval", IntervalTrigger,
                 lambda t: [t.__getstate__()[key] for key in
                            ("timezone", "start_date", "end_date", "interval", "jitter")],
                 _interval_from_state),
    TriggerCodec("cron", CronTrigger, _cron_to_state, _cron_from_state),
    TriggerCodec("calendarinterval", CalendarIntervalTrigger, _calendar_to_state,
                 _calendar_from_state),
    TriggerCodec("and", AndTrigger, _combining_to_state, _combining_from_state(AndTrigger)),
    TriggerCodec("or", OrTrigger, _combining_to_state, _combining_from_state(OrTrigger)),
)  # fmt: skip

#: Every kind a payload may name, in the order of their msgpack-state ext codes.
KINDS = (*_CONSTRUCTORS, "trigger")


# ----------------------------------------------------------------------------- marshaller


class StateMarshaller:
    """Reduces values to ``(kind, payload)`` and constructs them back; configured once.

    :param triggers: extra trigger codecs beside the built-in and globally registered ones
    :param format_name: the name used in error messages
    """

    def __init__(self, triggers: tuple[TriggerCodec, ...] = (), format_name: str = "msgpack-state"):
        self.format_name = format_name
        self._triggers_by_class: dict[type, TriggerCodec] = {}
        self._triggers_by_name: dict[str, TriggerCodec] = {}
        for codec in (*_BUILTIN_TRIGGERS, *_REGISTERED_TRIGGERS, *triggers):
            self.add_trigger(codec)

    def add_trigger(self, codec: TriggerCodec) -> None:
        """Teach this marshaller one more trigger class."""
        known = self._triggers_by_name.get(codec.name)
        if known is not None and known.cls is not codec.cls:
            raise ValueError(
                f"trigger name {codec.name!r} is taken by {known.cls.__qualname__}; pick another"
            )
        self._triggers_by_class[codec.cls] = codec
        self._triggers_by_name[codec.name] = codec

    def reduce(self, value: Any) -> tuple[str, Any]:
        """Return ``(kind, payload)`` for a value that is not plain data.

        :raises UnsupportedValueError: the value has no encoding (``path`` is ``"value"``)
        """
        value_type = type(value)
        reducer = _REDUCERS.get(value_type)
        try:
            if reducer is not None:
                return reducer(value)
            codec = self._triggers_by_class.get(value_type)
            if codec is not None:
                return "trigger", [codec.name, *codec.to_state(value)]
            if pytz is not None and isinstance(value, pytz.BaseTzInfo):
                return _reduce_pytz(value)
        except Exception as exc:
            raise UnsupportedValueError(
                "value", value_type, self.format_name, f"{type(exc).__name__}: {exc}"
            ) from exc
        raise UnsupportedValueError("value", value_type, self.format_name, self._hint(value))

    def construct(self, kind: str, payload: Any) -> Any:
        """Build the value a ``(kind, payload)`` pair describes. Imports nothing.

        :raises DeserializationError: unknown kind or trigger name, or a malformed payload
        """
        try:
            if kind == "trigger":
                name, *state = payload
                codec = self._triggers_by_name.get(name)
                if codec is None:
                    raise DeserializationError(
                        f"trigger {name!r} is not registered; call "
                        "jobshelf.register_trigger(...) for it before the scheduler starts"
                    )
                return codec.from_state(state)
            constructor = _CONSTRUCTORS.get(kind)
            if constructor is None:
                raise DeserializationError(f"unknown value kind {kind!r}")
            return constructor(payload)
        except DeserializationError:
            raise
        except Exception as exc:
            raise DeserializationError(
                f"malformed {kind} payload {payload!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def find_unsupported(self, value: Any, path: str = "") -> UnsupportedValueError | None:
        """Walk ``value`` and return the error for the first value without an encoding.

        Slow, thorough and only used after a fast encoder failed, to say *where* it failed.
        """
        for child_path, child in self._walk(value, path):
            try:
                self.reduce(child)
            except UnsupportedValueError as exc:
                error = UnsupportedValueError(
                    child_path or "state", exc.value_type, self.format_name, self._hint(child)
                )
                error.__cause__ = exc.__cause__
                return error
        return None

    def _walk(self, value: Any, path: str) -> Iterator[tuple[str, Any]]:
        value_type = type(value)
        if value is None or value_type in (bool, float, str, bytes):
            return
        if value_type is int:
            if -(2**63) <= value < 2**64:
                return
            yield path, value
            return
        if value_type is list or value_type is tuple:
            for index, item in enumerate(value):
                yield from self._walk(item, f"{path}[{index}]")
            return
        if value_type is set or value_type is frozenset:
            for item in value:
                yield from self._walk(item, f"{path}<item {item!r}>")
            return
        if value_type is dict:
            for key, item in value.items():
                yield from self._walk(key, f"{path}<key {key!r}>")
                yield from self._walk(item, f"{path}[{key!r}]" if path else str(key))
            return
        yield path, value
        try:
            kind, payload = self.reduce(value)
        except UnsupportedValueError:
            return
        yield from self._walk(payload, f"{path}<{kind}>")

    @staticmethod
    def _hint(value: Any) -> str:
        if isinstance(value, BaseTrigger):
            return "register it with jobshelf.register_trigger(cls, name, to_state, from_state)"
        if callable(value):
            return "pass a 'module:function' reference, or use serializer='cloudpickle'"
        return "convert it to supported data, or use serializer='cloudpickle'"


_REGISTERED_TRIGGERS: list[TriggerCodec] = []
_MARSHALLERS: weakref.WeakSet[StateMarshaller] = weakref.WeakSet()


def register_trigger(
    cls: type,
    name: str,
    to_state: Callable[[Any], Any],
    from_state: Callable[[Any], Any],
) -> None:
    """Teach every plain-data serializer (msgpack-state included) a custom trigger class.

    ``to_state(trigger)`` returns a list of supported values; ``from_state(payload)`` rebuilds the
    trigger from it. The class is stored by ``name`` and never imported by name: register it in
    every process that reads the jobs, before the scheduler starts.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseTrigger)):
        raise TypeError(f"{cls!r} is not a trigger class (a BaseTrigger subclass)")
    codec = TriggerCodec(name, cls, to_state, from_state)
    for marshaller in _MARSHALLERS:
        marshaller.add_trigger(codec)
    _REGISTERED_TRIGGERS.append(codec)


def default_marshaller() -> StateMarshaller:
    """A marshaller that follows :func:`register_trigger` registrations (made before or after)."""
    marshaller = StateMarshaller()
    _MARSHALLERS.add(marshaller)
    return marshaller
