"""Deliberately broken serializers: the conformance kit must catch each one."""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any


def _transform(value: Any, leaf: Any) -> Any:
    if isinstance(value, dict):
        return {_transform(key, leaf): _transform(item, leaf) for key, item in value.items()}
    if isinstance(value, list):
        return [_transform(item, leaf) for item in value]
    if isinstance(value, tuple):
        return tuple(_transform(item, leaf) for item in value)
    return leaf(value)


class _Lossy:
    """Pickle, after a transformation of the job state that loses something."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def dumps(self, state: dict[str, Any], /) -> bytes:
        return pickle.dumps(self.transform(state))

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return dict(pickle.loads(data))


class TuplesToLists(_Lossy):
    """Turns tuples nested inside the arguments into lists (the top-level args stay a tuple)."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        def listify(value: Any) -> Any:
            if isinstance(value, tuple):
                return [listify(item) for item in value]
            if isinstance(value, list):
                return [listify(item) for item in value]
            if isinstance(value, dict):
                return {key: listify(item) for key, item in value.items()}
            return value

        return {**state, "args": tuple(listify(item) for item in state["args"]),
                "kwargs": listify(state["kwargs"])}  # fmt: skip


class PytzToUtc(_Lossy):
    """Converts datetimes in pytz zones to UTC: the same instant, but the zone is lost."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        def to_utc(value: Any) -> Any:
            if isinstance(value, dt.datetime) and type(value.tzinfo).__module__.startswith("pytz"):
                return value.astimezone(dt.timezone.utc)
            return value

        return _with(state, to_utc)


class TruncatesMicroseconds(_Lossy):
    """Drops the microseconds of every datetime it sees at the top level and in arguments."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        def truncate(value: Any) -> Any:
            if isinstance(value, dt.datetime):
                return value.replace(microsecond=0)
            return value

        return _with(state, truncate)


def _with(state: dict[str, Any], leaf: Any) -> dict[str, Any]:
    """Apply ``leaf`` to next_run_time, args and kwargs (the trigger is left intact)."""
    return {
        **state,
        "next_run_time": leaf(state["next_run_time"]),
        "args": _transform(state["args"], leaf),
        "kwargs": _transform(state["kwargs"], leaf),
    }


class AcceptsAnything(_Lossy):
    """Stores what pickle cannot as its repr: 'works', silently loses the value."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        def stringify(value: Any) -> Any:
            try:
                pickle.dumps(value)
            except Exception:
                return repr(value)
            return value

        return _with(state, stringify)


class DecodesGarbage(_Lossy):
    """Returns an empty-ish job state instead of failing on bytes it cannot read."""

    def transform(self, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def loads(self, data: bytes, /) -> dict[str, Any]:
        try:
            return dict(pickle.loads(data))
        except Exception:
            from jobshelf.testing import sample_state

            return sample_state()
