"""Time zones as plain data: ``datetime.timezone``, ``zoneinfo.ZoneInfo`` and pytz zones.

Constructing a zone never imports anything and never reads a file for a key that is not a known
zone: keys are checked against the system's zone list (read once, when the first marshaller is
made) before they reach :class:`zoneinfo.ZoneInfo` or pytz.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import zoneinfo
from typing import Any

try:  # pytz is optional: imported here, once, never while decoding
    import pytz
    import pytz.tzinfo
except ImportError:  # pragma: no cover - exercised only without pytz installed
    pytz = None

__all__ = [
    "ZONE_KINDS",
    "construct_zone",
    "fixed_offset_args",
    "is_pytz",
    "known_zone_keys",
    "reduce_zone",
]

_MICROSECOND = dt.timedelta(microseconds=1)
_ZERO = dt.timedelta(0)
_DAY_MICROSECONDS = 86_400_000_000

#: The value kinds this module reduces and constructs.
ZONE_KINDS = ("timezone", "zoneinfo", "pytz")


@functools.lru_cache(maxsize=1)
def known_zone_keys() -> frozenset[str]:
    """Every zone key ``zoneinfo`` can load here (read once; warmed when a marshaller is made)."""
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=1)
def _pytz_zone_names() -> frozenset[str]:
    # iterate: frozenset(pytz.all_timezones_set) reads the lazy set before it is filled
    return frozenset(iter(pytz.all_timezones)) if pytz is not None else frozenset()


_KEY_SYNTAX = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


def is_known_zone_key(key: Any) -> bool:
    """True for a key in the zone list, or a well-formed key naming a file on ``zoneinfo.TZPATH``
    (``posix/UTC``, say). Nothing is imported; at most a file's existence is checked."""
    if type(key) is not str:
        return False
    if key in known_zone_keys():
        return True
    if len(key) > 64 or not _KEY_SYNTAX.fullmatch(key):
        return False
    return any(os.path.isfile(os.path.join(root, key)) for root in zoneinfo.TZPATH)


def warm_up() -> None:
    """Read the zone lists now, so that decoding later reads nothing but zone files."""
    known_zone_keys()
    _pytz_zone_names()


def is_pytz(value: Any) -> bool:
    """True for any pytz zone object."""
    return pytz is not None and isinstance(value, pytz.BaseTzInfo)


def fixed_offset_args(value: dt.timezone) -> tuple[Any, ...]:
    """``(offset,)`` or ``(offset, name)``: a :class:`datetime.timezone` with its explicit name."""
    return value.__getinitargs__()  # type: ignore[attr-defined,no-any-return]


def reduce_zone(value: dt.tzinfo) -> tuple[str, Any] | None:
    """``(kind, payload)`` for a zone this module knows, else ``None``."""
    value_type = type(value)
    if value_type is dt.timezone:
        args = fixed_offset_args(value)  # type: ignore[arg-type]
        offset = args[0] // _MICROSECOND
        return "timezone", [offset] if len(args) == 1 else [offset, args[1]]
    if value_type is zoneinfo.ZoneInfo:
        key = value.key  # type: ignore[attr-defined]
        if key is None:
            raise TypeError("a ZoneInfo built from a file has no key; use ZoneInfo('Area/City')")
        return "zoneinfo", key
    if is_pytz(value):
        return "pytz", _pytz_payload(value)
    return None


def _pytz_payload(value: Any) -> list[Any]:
    # pytz's own pickling interface says what identifies a zone object exactly
    constructor, args = value.__reduce__()[:2]
    if constructor is pytz.FixedOffset:
        return [None, *args]
    if not args:  # pytz.utc
        return [value.zone]
    return list(args)


def construct_zone(kind: str, payload: Any) -> dt.tzinfo:
    """Build the zone a ``(kind, payload)`` pair describes; unknown keys are refused first."""
    if kind == "timezone":
        return _construct_fixed_offset(payload)
    if kind == "zoneinfo":
        if not is_known_zone_key(payload):
            raise ValueError(f"unknown zone key {payload!r}")
        return zoneinfo.ZoneInfo(payload)
    if kind == "pytz":
        return _construct_pytz(payload)
    raise ValueError(f"{kind!r} is not a zone kind")


def _construct_fixed_offset(payload: list[Any]) -> dt.timezone:
    if type(payload) is not list or len(payload) not in (1, 2) or type(payload[0]) is not int:
        raise ValueError("expected [offset_microseconds] or [offset_microseconds, name]")
    if not -_DAY_MICROSECONDS < payload[0] < _DAY_MICROSECONDS:
        raise ValueError("offset out of range")
    offset = dt.timedelta(microseconds=payload[0])
    if len(payload) == 1:
        return dt.timezone.utc if offset == _ZERO else dt.timezone(offset)
    return dt.timezone(offset, payload[1])


def _construct_pytz(payload: list[Any]) -> dt.tzinfo:
    from .._exceptions import DeserializationError

    if pytz is None:
        raise DeserializationError(
            'this job holds a pytz time zone but pytz is not installed: pip install "jobshelf[pytz]"'
        )
    if type(payload) is not list or len(payload) not in (1, 2, 4):
        raise ValueError("expected [zone], [zone, utcoffset, dst, tzname] or [nil, minutes]")
    if payload[0] is None:
        if len(payload) != 2 or type(payload[1]) is not int:
            raise ValueError("expected [nil, minutes]")
        return pytz.FixedOffset(payload[1])  # type: ignore[no-any-return]
    if payload[0] not in _pytz_zone_names():
        raise ValueError(f"unknown pytz zone {payload[0]!r}")
    if len(payload) == 4 and not all(type(item) is int for item in payload[1:3]):
        raise ValueError("utcoffset and dst must be whole seconds")
    return pytz.tzinfo.unpickler(*payload)  # type: ignore[no-any-return]
