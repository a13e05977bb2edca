"""Exact comparison of job states: what "lost nothing" means, in one place.

Triggers define no ``__eq__`` and ``==`` is too lenient for a round trip (``(1,) != [1]`` is the
only type check it does, ``1 == 1.0 == True``, aware datetimes compare by instant), so the self-check
at resolution time and the conformance kit both use :func:`state_difference`.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter
from typing import Any

from ._marshal._triggers import field_expression

__all__ = ["state_difference"]


def state_difference(expected: Any, actual: Any, path: str = "state") -> str | None:
    """Return ``None`` when ``actual`` equals ``expected`` exactly, else where and how they differ.

    Exact means: the same types everywhere (``tuple`` is not ``list``, ``date`` is not
    ``datetime``, a pytz zone is not a zoneinfo zone), datetimes equal field by field with the same
    ``fold`` and the same zone object kind and parameters, floats equal by ``repr`` (so ``nan`` and
    ``-0.0`` survive), triggers equal by class and ``__getstate__()``.
    """
    if type(expected) is not type(actual):
        return (
            f"{path}: expected {type(expected).__qualname__} {expected!r}, "
            f"got {type(actual).__qualname__} {actual!r}"
        )
    if isinstance(expected, dict):
        return _dict_difference(expected, actual, path)
    if isinstance(expected, (list, tuple)):
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} items, got {len(actual)}"
        for index, (left, right) in enumerate(zip(expected, actual)):
            found = state_difference(left, right, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(expected, (set, frozenset)):
        if expected != actual or _type_counts(expected) != _type_counts(actual):
            return f"{path}: expected {expected!r}, got {actual!r}"
        return None
    if isinstance(expected, float):
        return None if repr(expected) == repr(actual) else _plain(path, expected, actual)
    if isinstance(expected, decimal.Decimal):
        return None if str(expected) == str(actual) else _plain(path, expected, actual)
    if isinstance(expected, (dt.datetime, dt.time)):
        return _clock_difference(expected, actual, path)
    if isinstance(expected, dt.tzinfo):
        return _zone_difference(expected, actual, path)
    if _is_trigger(expected):
        return state_difference(expected.__getstate__(), actual.__getstate__(), f"{path}<state>")
    if _is_cron_field(expected):
        left = (expected.name, field_expression(expected), expected.is_default)
        right = (actual.name, field_expression(actual), actual.is_default)
        return None if left == right else _plain(path, left, right)
    if callable(expected) and expected is not actual:
        left = (getattr(expected, "__module__", None), getattr(expected, "__qualname__", None))
        right = (getattr(actual, "__module__", None), getattr(actual, "__qualname__", None))
        return None if left == right else _plain(path, expected, actual)
    try:
        equal = bool(expected == actual)
    except Exception:  # a value whose __eq__ raises is not equal to anything
        equal = False
    return None if equal else _plain(path, expected, actual)


def _plain(path: str, expected: Any, actual: Any) -> str:
    return f"{path}: expected {expected!r}, got {actual!r}"


def _type_counts(values: Any) -> Counter[type]:
    return Counter(type(value) for value in values)


def _dict_difference(expected: dict[Any, Any], actual: dict[Any, Any], path: str) -> str | None:
    left_keys, right_keys = list(expected), list(actual)
    if len(left_keys) != len(right_keys) or set(left_keys) != set(right_keys):
        missing = [key for key in left_keys if key not in actual]
        extra = [key for key in right_keys if key not in expected]
        return f"{path}: keys differ (missing {missing!r}, unexpected {extra!r})"
    for key in left_keys:
        right_key = next(candidate for candidate in right_keys if candidate == key)
        found = state_difference(key, right_key, f"{path}<key {key!r}>")
        if found:
            return found
        found = state_difference(expected[key], actual[key], f"{path}[{key!r}]")
        if found:
            return found
    return None


def _clock_difference(expected: dt.datetime | dt.time, actual: Any, path: str) -> str | None:
    if expected.replace(tzinfo=None) != actual.replace(tzinfo=None) or expected.fold != actual.fold:
        return _plain(path, expected, actual)
    if (expected.tzinfo is None) != (actual.tzinfo is None):
        return _plain(path, expected, actual)
    if expected.tzinfo is None:
        return None
    return state_difference(expected.tzinfo, actual.tzinfo, f"{path}.tzinfo")


def _zone_difference(expected: dt.tzinfo, actual: dt.tzinfo, path: str) -> str | None:
    if expected is actual:
        return None
    reduce_expected = getattr(expected, "__reduce__", None)
    if type(expected).__module__.startswith("pytz") and reduce_expected is not None:
        # pytz: zone name plus the (utcoffset, dst, tzname) variant, as pytz pickles it
        left = reduce_expected()[1]
        right = actual.__reduce__()[1]
        return None if left == right else _plain(path, expected, actual)
    key = getattr(expected, "key", None)
    if key is not None:  # zoneinfo.ZoneInfo
        return None if key == getattr(actual, "key", None) else _plain(path, expected, actual)
    probe = dt.datetime(2000, 1, 1)
    same = expected == actual and expected.tzname(probe) == actual.tzname(probe)
    return None if same else _plain(path, expected, actual)


def _is_trigger(value: Any) -> bool:
    from apscheduler.triggers.base import BaseTrigger

    return isinstance(value, BaseTrigger)


def _is_cron_field(value: Any) -> bool:
    from apscheduler.triggers.cron.fields import BaseField

    return isinstance(value, BaseField)
