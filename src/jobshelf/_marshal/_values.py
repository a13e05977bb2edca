"""Value kinds beyond plain data: containers, numbers, identifiers, dates and times.

Each kind has one reducer (value -> payload of plain data or further values) and one constructor
(payload -> value). Constructors check the payload's shape, so a malformed payload fails with an
error instead of building something else.
"""

from __future__ import annotations

import datetime as dt
import decimal
import operator
import uuid
from collections.abc import Callable
from typing import Any

__all__ = [
    "DATETIME_FIELDS",
    "VALUE_CONSTRUCTORS",
    "VALUE_REDUCERS",
    "datetime_fields",
    "datetime_from_fields",
]

#: The longest decimal string an ``int`` or ``Decimal`` payload may have (no quadratic parsing).
MAX_NUMBER_DIGITS = 4300


#: The one datetime encoding: wall-clock fields and ``fold``, in this order (the zone is encoded
#: beside them). ``datetime_fields(value)`` returns them as a tuple, in one C call.
DATETIME_FIELDS = ("year", "month", "day", "hour", "minute", "second", "microsecond", "fold")
datetime_fields: Callable[[dt.datetime], tuple[int, ...]] = operator.attrgetter(*DATETIME_FIELDS)


def datetime_from_fields(fields: tuple[int, ...] | list[int], zone: dt.tzinfo | None) -> dt.datetime:
    """Rebuild a datetime from :func:`datetime_fields` and its zone (``datetime`` checks both)."""
    year, month, day, hour, minute, second, microsecond, fold = fields
    return dt.datetime(year, month, day, hour, minute, second, microsecond, zone, fold=fold)


def _list_of(count: int, payload: Any) -> list[Any]:
    if type(payload) is not list or len(payload) != count:
        raise ValueError(f"expected an array of {count} items")
    return payload


def _ints(count: int, payload: Any) -> list[int]:
    items = _list_of(count, payload)
    if not all(type(item) is int for item in items):
        raise ValueError(f"expected {count} integers")
    return items


def _number_text(payload: Any) -> str:
    if type(payload) is not str or len(payload) > MAX_NUMBER_DIGITS:
        raise ValueError(f"expected a number string of at most {MAX_NUMBER_DIGITS} characters")
    return payload


def _items(payload: Any) -> list[Any]:
    if type(payload) is not list:
        raise ValueError("expected an array")
    return payload


def _construct_datetime(payload: Any) -> dt.datetime:
    items = _list_of(9, payload)
    return datetime_from_fields(_ints(8, items[:8]), items[8])


def _construct_time(payload: Any) -> dt.time:
    hour, minute, second, microsecond, fold, zone = _list_of(6, payload)
    if zone is not None and not isinstance(zone, dt.tzinfo):
        raise TypeError(f"expected a time zone, got {type(zone).__name__}")
    hour, minute, second, microsecond = _ints(4, [hour, minute, second, microsecond])
    return dt.time(hour, minute, second, microsecond, zone, fold=fold)


VALUE_REDUCERS: dict[type, Callable[[Any], tuple[str, Any]]] = {
    tuple: lambda value: ("tuple", list(value)),
    set: lambda value: ("set", list(value)),
    frozenset: lambda value: ("frozenset", list(value)),
    int: lambda value: ("int", str(value)),  # only ints too large for the format's native ints
    decimal.Decimal: lambda value: ("decimal", str(value)),
    uuid.UUID: lambda value: ("uuid", str(value)),
    dt.datetime: lambda value: ("datetime", [*datetime_fields(value), value.tzinfo]),
    dt.date: lambda value: ("date", [value.year, value.month, value.day]),
    dt.time: lambda value: (
        "time",
        [value.hour, value.minute, value.second, value.microsecond, value.fold, value.tzinfo],
    ),
    dt.timedelta: lambda value: ("timedelta", [value.days, value.seconds, value.microseconds]),
}

VALUE_CONSTRUCTORS: dict[str, Callable[[Any], Any]] = {
    "tuple": lambda payload: tuple(_items(payload)),
    "set": lambda payload: set(_items(payload)),
    "frozenset": lambda payload: frozenset(_items(payload)),
    "int": lambda payload: int(_number_text(payload)),
    "decimal": lambda payload: decimal.Decimal(_number_text(payload)),
    "uuid": lambda payload: uuid.UUID(_number_text(payload)),
    "datetime": _construct_datetime,
    "date": lambda payload: dt.date(*_items(payload)),  # date() refuses anything but 3 ints
    "time": _construct_time,
    "timedelta": lambda payload: dt.timedelta(*_ints(3, payload)),  # timedelta() takes floats too
}
