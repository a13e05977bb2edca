"""The Serializer protocol, format names, and encoding/decoding with any serializer.

This module is store-agnostic: it knows job-state dicts and bytes, nothing about MongoDB.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol, Union, runtime_checkable

from ._exceptions import (
    DeserializationError,
    JobshelfError,
    SerializationError,
)

__all__ = [
    "STATE_KEYS",
    "RestrictedReading",
    "Serializer",
    "SerializerSpec",
    "decode_with",
    "decoding_runs_code",
    "dump_state",
    "format_name",
    "is_pickle_family",
    "load_state",
    "pickle_protocol_number",
    "sample_state",
    "stores_callables_by_value",
]

#: The keys every job state has (``Job.__getstate__``); a decoded dict without them is not one.
STATE_KEYS = frozenset(
    ("version", "id", "func", "trigger", "executor", "args", "kwargs", "name",
     "misfire_grace_time", "coalesce", "max_instances", "next_run_time")
)  # fmt: skip


@runtime_checkable
class Serializer(Protocol):
    """Turns a job state dict into bytes and back.

    The state is the dict :meth:`apscheduler.job.Job.__getstate__` returns (``version``, ``id``,
    ``func``, ``trigger``, ``executor``, ``args``, ``kwargs``, ``name``, ``misfire_grace_time``,
    ``coalesce``, ``max_instances``, ``next_run_time``). Both methods take their argument
    positionally, so plain modules such as :mod:`pickle` or ``cloudpickle`` satisfy the protocol.

    Optional capabilities are declared explicitly: :class:`RestrictedReading` (a
    ``loads_restricted`` method). Optional attributes a serializer may declare (never required):

    ``format_name`` (str)
        the tag stored beside the bytes; defaults to the registered name or ``module:Class``
    ``pickle_family`` (bool)
        ``loads`` reads stock pickle bytes, so untagged stock documents are accepted by default
    ``stores_callables_by_value`` (bool)
        the state may carry the callable itself (lambdas, closures, ``__main__`` functions)
    ``text`` (bool)
        the bytes are UTF-8 text; a store may keep them as a string that database tools show
    ``decoding_runs_code`` (bool)
        ``loads`` may import or call what the data names (pickle does); tools such as
        ``jobshelf inspect`` decode only formats that declare ``False``
    """

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Encode a job state. Raise :class:`SerializationError` for what cannot be encoded."""
        ...

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Decode bytes written by :meth:`dumps`. Raise :class:`DeserializationError` on bad data."""
        ...


@runtime_checkable
class RestrictedReading(Protocol):
    """An optional capability: decoding with only the globals a policy allows.

    A serializer that can read its bytes without importing or calling anything outside an
    allow-list declares it by defining ``loads_restricted``. A store configured with
    ``allowed_callables`` then reads that format only through it, and so does the CLI.
    """

    def loads_restricted(self, data: bytes, allows_global: Callable[[str, str], bool], /) -> dict[str, Any]:
        """Decode like ``loads``, admitting a global ``(module, qualname)`` only when
        ``allows_global`` says so. Raise :class:`DeserializationError` for anything else."""
        ...


#: What ``serializer=`` accepts: None, a name, a ``"module:attr"`` string, a class, or an object.
SerializerSpec = Union[None, str, type, Serializer, ModuleType]


def format_name(serializer: Any) -> str:
    """Return the format tag stored beside the bytes this serializer writes."""
    declared = getattr(serializer, "format_name", None)
    if isinstance(declared, str) and declared:
        return declared
    if isinstance(serializer, ModuleType):
        return serializer.__name__
    cls = type(serializer)
    return f"{cls.__module__}:{cls.__qualname__}"


def is_pickle_family(serializer: Any) -> bool:
    """True when ``serializer.loads`` reads the stock store's pickle bytes."""
    declared = getattr(serializer, "pickle_family", None)
    if declared is not None:
        return bool(declared)
    return serializer is pickle or getattr(serializer, "__name__", None) == "cloudpickle"


def stores_callables_by_value(serializer: Any) -> bool:
    """True when the serializer persists callables themselves (lambdas, closures, ``__main__``)."""
    declared = getattr(serializer, "stores_callables_by_value", None)
    if declared is not None:
        return bool(declared)
    return getattr(serializer, "__name__", None) == "cloudpickle"


def decoding_runs_code(serializer: Any) -> bool:
    """True unless the serializer declares that decoding runs no code (``decoding_runs_code``)."""
    return bool(getattr(serializer, "decoding_runs_code", True))


def pickle_protocol_number(value: Any) -> int:
    """The protocol number :func:`pickle.dumps` would use for ``value``, or a clear error.

    Like pickle: a negative int means :data:`pickle.HIGHEST_PROTOCOL` and ``None`` means
    :data:`pickle.DEFAULT_PROTOCOL`. Unlike pickle, ``True``/``False`` are refused: they are ints
    to Python, but never what anyone meant by a protocol.
    """
    if value is None:
        return pickle.DEFAULT_PROTOCOL
    if type(value) is not int or value > pickle.HIGHEST_PROTOCOL:
        raise ValueError(
            f"pickle protocol must be an int up to {pickle.HIGHEST_PROTOCOL} (negative: the highest; "
            f"None: the default {pickle.DEFAULT_PROTOCOL}), got {value!r}"
        )
    return pickle.HIGHEST_PROTOCOL if value < 0 else value


def dump_state(serializer: Serializer, state: dict[str, Any]) -> bytes:
    """Encode with ``serializer``; any failure becomes a chained :class:`SerializationError`."""
    try:
        data = serializer.dumps(state)
    except JobshelfError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"{format_name(serializer)} could not encode the job state: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(
            f"{format_name(serializer)}.dumps() returned {type(data).__name__}, expected bytes"
        )
    return bytes(data)


def decode_with(name: str, decode: Callable[[bytes], Any], data: bytes) -> dict[str, Any]:
    """``decode(data)``; any failure becomes a chained :class:`DeserializationError` naming the
    format, and so does a result that is not a dict."""
    try:
        state = decode(data)
    except JobshelfError:
        raise
    except Exception as exc:
        raise DeserializationError(
            f"{name} could not decode the job state: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise DeserializationError(f"{name} decoded {type(state).__name__}, expected a job state dict")
    return state


def load_state(serializer: Serializer, data: bytes) -> dict[str, Any]:
    """Decode with ``serializer``; any failure becomes a chained :class:`DeserializationError`."""
    state = decode_with(format_name(serializer), serializer.loads, data)
    if not state.keys() >= STATE_KEYS:
        missing = sorted(STATE_KEYS - state.keys())
        raise DeserializationError(
            f"{format_name(serializer)} decoded a dict that is not a job state (missing {missing})"
        )
    return state


def sample_state() -> dict[str, Any]:
    """A small job state every serializer must round-trip: the self-check's sample."""
    from apscheduler.triggers.date import DateTrigger

    run_at = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    return {
        "version": 1,
        "id": "jobshelf-self-check",
        "func": "jobshelf:resolve_serializer",
        "trigger": DateTrigger(run_at),
        "executor": "default",
        "args": (1, "two", [3.5, None]),
        "kwargs": {"flag": True, "items": ["a", "b"]},
        "name": "self-check",
        "misfire_grace_time": 1,
        "coalesce": True,
        "max_instances": 1,
        "next_run_time": run_at,
    }
