"""Triggers as plain data: the codec type, the six built-in codecs, cron field rendering, and the
one trigger registry that every plain-data serializer reads at lookup time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, BaseCombiningTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import RangeExpression
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import astimezone

__all__ = [
    "MAX_CRON_EXPRESSION",
    "TriggerCodec",
    "cron_fields_compiled",
    "cron_fields_problem",
    "field_expression",
    "REGISTRY_BY_CLASS",
    "REGISTRY_BY_NAME",
    "register_trigger",
    "registered_triggers",
    "unregister_trigger",
]

#: The longest cron field expression stored or read (APScheduler's own are a few characters).
MAX_CRON_EXPRESSION = 256


@dataclass(frozen=True)
class TriggerCodec:
    """How one trigger class becomes plain data and back.

    :ivar name: the name stored in the payload (unique; never imported)
    :ivar cls: the exact trigger class (subclasses need their own registration)
    :ivar to_state: trigger -> list of supported values
    :ivar from_state: that list -> trigger
    """

    name: str
    cls: type
    to_state: Callable[[Any], Any]
    from_state: Callable[[Any], Any]


# ----------------------------------------------------------------------------- cron fields


def field_expression(field: Any) -> str:
    """The expression that recompiles to the same cron field.

    ``str(field)`` is not always lossless: APScheduler renders the range ``0-0/1`` as ``0/1``, which
    parses back as "from 0 to the maximum, every 1" (the conformance kit found this). This renders
    such a range with its end, and every other expression as APScheduler does.
    """
    parts = []
    for expression in field.expressions:
        if type(expression) is RangeExpression and expression.step and expression.last == expression.first:
            parts.append(f"{expression.first}-{expression.last}/{expression.step}")
        else:
            parts.append(str(expression))
    return ",".join(parts)


# (expressions, default bits) -> compiled fields. Fields are never changed after they are
# compiled, so equal ones are shared between triggers. Only checked keys get in (8 expressions of
# at most MAX_CRON_EXPRESSION characters), and at most _CRON_CACHE_LIMIT of them.
_CRON_FIELDS: dict[tuple[tuple[str, ...], int], tuple[Any, ...]] = {}
_CRON_CACHE_LIMIT = 1024
# id(field) -> field for every field in _CRON_FIELDS: built by APScheduler's own field classes from
# checked expressions, so a trigger holding only these needs no further check of its fields.
_COMPILED: dict[int, Any] = {}
_FIELD_ATTRIBUTES = frozenset(("name", "is_default", "expressions"))


def _cron_fields(expressions: Any, defaults: Any) -> tuple[Any, ...]:
    key = (tuple(expressions), defaults)
    fields = _CRON_FIELDS.get(key)  # an unhashable payload raises TypeError: malformed
    if fields is not None:
        return fields
    if (
        type(expressions) is not list
        or len(expressions) != len(CronTrigger.FIELD_NAMES)
        or not all(type(text) is str and len(text) <= MAX_CRON_EXPRESSION for text in expressions)
    ):
        raise ValueError(
            f"a CronTrigger has {len(CronTrigger.FIELD_NAMES)} field expressions of at most "
            f"{MAX_CRON_EXPRESSION} characters"
        )
    if type(defaults) is not int or not 0 <= defaults < 1 << len(CronTrigger.FIELD_NAMES):
        raise ValueError("malformed default bits")
    fields = tuple(
        CronTrigger.FIELDS_MAP[name](name, expression, bool(defaults >> index & 1))
        for index, (name, expression) in enumerate(zip(CronTrigger.FIELD_NAMES, expressions))
    )
    if len(_CRON_FIELDS) >= _CRON_CACHE_LIMIT:
        _CRON_FIELDS.clear()
        _COMPILED.clear()
    _CRON_FIELDS[key] = fields
    _COMPILED.update((id(field), field) for field in fields)
    return fields


def cron_fields_problem(fields: Any) -> str | None:
    """What is wrong with a CronTrigger's ``fields``, or ``None`` when they are exactly what
    CronTrigger's constructor builds from their own expressions.

    Fields decoded by a plain-data serializer were built by the constructor (a dictionary look-up
    says so); others (unpickled: their attributes set without any constructor) are rendered,
    compiled again and compared attribute by attribute, types included.
    """
    if type(fields) is not list or len(fields) != len(CronTrigger.FIELD_NAMES):
        return f"is not a list of {len(CronTrigger.FIELD_NAMES)} cron fields"
    if cron_fields_compiled(fields):
        return None
    expressions, defaults = [], 0
    for index, (name, field) in enumerate(zip(CronTrigger.FIELD_NAMES, fields)):
        if (
            type(field) is not CronTrigger.FIELDS_MAP[name]
            or getattr(field, "__dict__", {}).keys() != _FIELD_ATTRIBUTES
            or type(field.name) is not str
            or field.name != name
            or type(field.is_default) is not bool
            or type(field.expressions) is not list
        ):
            return f"[{index}] is not a {name!r} field as CronTrigger builds it"
        try:
            expressions.append(field_expression(field))
        except Exception as exc:
            return f"[{index}] ({name}) cannot be rendered as an expression ({type(exc).__name__}: {exc})"
        defaults |= field.is_default << index
    try:
        compiled = _cron_fields(expressions, defaults)
    except Exception as exc:
        return f"holds an expression CronTrigger refuses ({exc})"
    for index, (field, built) in enumerate(zip(fields, compiled)):
        if not _same_expressions(field.expressions, built.expressions):
            expression = expressions[index]
            return f"[{index}] ({field.name}) holds values CronTrigger would not build from {expression!r}"
    return None


def cron_fields_compiled(fields: list[Any]) -> bool:
    """Whether every field is one this module compiled (and so holds alive, unchanged)."""
    return all(_COMPILED.get(id(field)) is field for field in fields)


def _same_expressions(found: list[Any], built: list[Any]) -> bool:
    if len(found) != len(built):
        return False
    for have, want in zip(found, built):
        attributes = getattr(have, "__dict__", None)
        if type(have) is not type(want) or type(attributes) is not dict:
            return False
        if attributes.keys() != vars(want).keys():
            return False
        for key, value in vars(want).items():
            if type(attributes[key]) is not type(value) or attributes[key] != value:
                return False
    return True


# id(field) -> (field, its expression): rendering a field is the costly part of encoding a
# CronTrigger. The entry holds the field, so its id cannot be reused while cached.
_EXPRESSIONS: dict[int, tuple[Any, str]] = {}
_EXPRESSIONS_LIMIT = 4096


def _cron_expression(field: Any) -> str:
    entry = _EXPRESSIONS.get(id(field))
    if entry is not None and entry[0] is field:
        return entry[1]
    expression = field_expression(field)
    if len(expression) > MAX_CRON_EXPRESSION:
        raise ValueError(f"cron field {field.name!r} is longer than {MAX_CRON_EXPRESSION} characters")
    if len(_EXPRESSIONS) >= _EXPRESSIONS_LIMIT:
        _EXPRESSIONS.clear()
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
    fields = list(_cron_fields(expressions, defaults))
    trigger = CronTrigger.__new__(CronTrigger)
    trigger.timezone = astimezone(timezone)  # as CronTrigger.__setstate__ does
    trigger.start_date = start_date
    trigger.end_date = end_date
    trigger.fields = fields
    trigger.jitter = jitter
    return trigger


# ----------------------------------------------------------------------------- other triggers
# The hot triggers are rebuilt slot by slot, as their __setstate__ does (DateTrigger v1,
# IntervalTrigger v2, CronTrigger v2): building a state dict and calling __setstate__ costs more
# than the rest of decoding them. The tests check every slot against APScheduler's __setstate__.


def _date_from_state(payload: list[Any]) -> DateTrigger:
    (run_date,) = payload
    trigger = DateTrigger.__new__(DateTrigger)
    trigger.run_date = run_date
    return trigger


_INTERVAL_KEYS = ("timezone", "start_date", "end_date", "interval", "jitter")


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
    if len(payload) != 11:
        raise ValueError("a CalendarIntervalTrigger has 11 fields")
    trigger = CalendarIntervalTrigger.__new__(CalendarIntervalTrigger)
    trigger.__setstate__({
        "version": 1, "interval": payload[0:4], "time": payload[4:7], "start_date": payload[7],
        "end_date": payload[8], "timezone": payload[9], "jitter": payload[10],
    })  # fmt: skip
    return trigger


def _combining_from_state(cls: Any) -> Callable[[Any], Any]:
    def from_state(payload: list[Any]) -> Any:
        # APScheduler's __setstate__ would import each member's class by name: build directly.
        members, jitter = payload
        if type(members) is not list or not all(isinstance(member, BaseTrigger) for member in members):
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
                 lambda t: [t.__getstate__()[key] for key in _INTERVAL_KEYS], _interval_from_state),
    TriggerCodec("cron", CronTrigger, _cron_to_state, _cron_from_state),
    TriggerCodec("calendarinterval", CalendarIntervalTrigger, _calendar_to_state, _calendar_from_state),
    TriggerCodec("and", AndTrigger, _combining_to_state, _combining_from_state(AndTrigger)),
    TriggerCodec("or", OrTrigger, _combining_to_state, _combining_from_state(OrTrigger)),
)  # fmt: skip
_BUILTIN_NAMES = frozenset(codec.name for codec in _BUILTIN_TRIGGERS)

# ----------------------------------------------------------------------------- the registry

_LOCK = threading.Lock()
_BY_NAME: dict[str, TriggerCodec] = {codec.name: codec for codec in _BUILTIN_TRIGGERS}
_BY_CLASS: dict[type, TriggerCodec] = {codec.cls: codec for codec in _BUILTIN_TRIGGERS}


def register_trigger(
    cls: type,
    name: str,
    to_state: Callable[[Any], Any],
    from_state: Callable[[Any], Any],
) -> TriggerCodec:
    """Teach every plain-data serializer (msgpack-state included) a custom trigger class.

    ``to_state(trigger)`` returns a list of supported values; ``from_state(payload)`` rebuilds the
    trigger from it. The class is stored by ``name`` and never imported by name: register it in
    every process that reads the jobs, before the scheduler starts. Serializers made before or
    after the registration see it.

    :raises ValueError: the name or the class is registered already (see :func:`unregister_trigger`)
    :raises TypeError: ``cls`` is not a trigger class
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseTrigger)):
        raise TypeError(f"{cls!r} is not a trigger class (a BaseTrigger subclass)")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a trigger name must be a non-empty string, got {name!r}")
    codec = TriggerCodec(name, cls, to_state, from_state)
    with _LOCK:
        taken = _BY_NAME.get(name)
        if taken is not None:
            raise ValueError(
                f"trigger name {name!r} is taken by {taken.cls.__qualname__}; pick another name, or "
                "call jobshelf.unregister_trigger() first"
            )
        if cls in _BY_CLASS:
            raise ValueError(
                f"{cls.__qualname__} is registered already as {_BY_CLASS[cls].name!r}; "
                "call jobshelf.unregister_trigger() first"
            )
        _BY_NAME[name] = codec
        _BY_CLASS[cls] = codec
    return codec


def unregister_trigger(name_or_cls: str | type) -> None:
    """Forget a trigger registered with :func:`register_trigger` (built-in ones stay).

    :raises LookupError: nothing is registered under that name or class
    """
    with _LOCK:
        codec = _BY_NAME.get(name_or_cls) if isinstance(name_or_cls, str) else _BY_CLASS.get(name_or_cls)
        if codec is None or codec.name in _BUILTIN_NAMES:
            raise LookupError(f"no custom trigger is registered as {name_or_cls!r}")
        del _BY_NAME[codec.name]
        del _BY_CLASS[codec.cls]


def registered_triggers() -> dict[str, TriggerCodec]:
    """Every trigger codec in the registry, built-in ones included, by name."""
    return dict(_BY_NAME)


#: The registry itself, for lookups on the hot path (read-only outside this module).
REGISTRY_BY_NAME = _BY_NAME
REGISTRY_BY_CLASS = _BY_CLASS
