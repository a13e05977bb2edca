"""The Serializer protocol, how a ``serializer=`` spec becomes one, and format names.

This module is store-agnostic: it knows job-state dicts and bytes, nothing about MongoDB.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import logging
import pickle
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Protocol, Union, runtime_checkable

from ._compare import state_difference
from ._exceptions import (
    DeserializationError,
    JobshelfError,
    SerializationError,
    SerializerConfigError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Serializer",
    "SerializerSpec",
    "available_serializers",
    "dump_state",
    "format_name",
    "is_pickle_family",
    "load_state",
    "resolve_serializer",
    "stores_callables_by_value",
]

logger = logging.getLogger("jobshelf")

#: The keys every job state has (``Job.__getstate__``); a decoded dict without them is not one.
_STATE_KEYS = frozenset(
    ("version", "id", "func", "trigger", "executor", "args", "kwargs", "name",
     "misfire_grace_time", "coalesce", "max_instances", "next_run_time")
)  # fmt: skip

#: Entry point group under which installed packages register serializers by name.
ENTRY_POINT_GROUP = "jobshelf.serializers"

#: The serializers that ship with jobshelf, by name (found even without installed metadata).
BUILTIN_SERIALIZERS: dict[str, str] = {
    "pickle": "jobshelf.serializers.pickle:PickleSerializer",
    "cloudpickle": "jobshelf.serializers.cloudpickle:CloudPickleSerializer",
    "msgpack": "jobshelf.serializers.msgpack:MsgpackStateSerializer",
}


@runtime_checkable
class Serializer(Protocol):
    """Turns a job state dict into bytes and back.

    The state is the dict :meth:`apscheduler.job.Job.__getstate__` returns (``version``, ``id``,
    ``func``, ``trigger``, ``executor``, ``args``, ``kwargs``, ``name``, ``misfire_grace_time``,
    ``coalesce``, ``max_instances``, ``next_run_time``). Both methods take their argument
    positionally, so plain modules such as :mod:`pickle` or ``cloudpickle`` satisfy the protocol.

    Optional attributes a serializer may declare (read with :func:`getattr`, never required):

    ``format_name`` (str)
        the tag stored beside the bytes; defaults to the registered name or ``module:Class``
    ``pickle_family`` (bool)
        ``loads`` reads stock pickle bytes, so untagged stock documents are accepted by default
    ``stores_callables_by_value`` (bool)
        the state may carry the callable itself (lambdas, closures, ``__main__`` functions)
    ``text`` (bool)
        the bytes are UTF-8 text; a store may keep them as a string that database tools show
    """

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Encode a job state. Raise :class:`SerializationError` for what cannot be encoded."""
        ...

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Decode bytes written by :meth:`dumps`. Raise :class:`DeserializationError` on bad data."""
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


def load_state(serializer: Serializer, data: bytes) -> dict[str, Any]:
    """Decode with ``serializer``; any failure becomes a chained :class:`DeserializationError`."""
    try:
        state = serializer.loads(data)
    except JobshelfError:
        raise
    except Exception as exc:
        raise DeserializationError(
            f"{format_name(serializer)} could not decode the job state: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise DeserializationError(
            f"{format_name(serializer)}.loads() returned {type(state).__name__}, expected a dict"
        )
    if not state.keys() >= _STATE_KEYS:
        missing = sorted(_STATE_KEYS - state.keys())
        raise DeserializationError(
            f"{format_name(serializer)} decoded a dict that is not a job state (missing {missing})"
        )
    return state


def available_serializers() -> dict[str, str]:
    """Map every serializer name :func:`resolve_serializer` knows to its ``module:attr``.

    Built-in names come first; packages add more under the ``jobshelf.serializers`` entry point
    group.
    """
    names = dict(BUILTIN_SERIALIZERS)
    for entry_point in _entry_points():
        names.setdefault(entry_point.name, entry_point.value)
    return names


def _entry_points() -> Iterable[Any]:
    from importlib.metadata import entry_points

    if sys.version_info >= (3, 10):
        return entry_points(group=ENTRY_POINT_GROUP)
    return entry_points().get(ENTRY_POINT_GROUP, [])  # pragma: no cover - Python 3.9


def resolve_serializer(
    spec: SerializerSpec = None, *, pickle_protocol: int | None = None, check: bool = True
) -> Serializer:
    """Turn a ``serializer=`` spec into a checked serializer object.

    ``spec`` may be ``None`` (pickle), a registered name (``"pickle"``, ``"cloudpickle"``,
    ``"msgpack"`` or one from the ``jobshelf.serializers`` entry point group), a
    ``"module:attr"`` string, a class (instantiated without arguments), a module or any object with
    ``dumps``/``loads``. ``pickle_protocol`` goes to the pickle or cloudpickle serializer made from
    a name or class; a non-default one is an error with any other spec. With ``check`` (the
    default) the result encodes and decodes a sample job state once, so a serializer that returns
    ``str`` or loses data fails here, with the reason.

    :raises SerializerConfigError: the spec is unknown, malformed, or fails its self-check
    """
    serializer = _instantiate(spec, pickle_protocol)
    if not callable(getattr(serializer, "dumps", None)) or not callable(getattr(serializer, "loads", None)):
        raise SerializerConfigError(
            f"serializer {spec!r} has no callable dumps()/loads(); pass a name "
            f"({', '.join(sorted(available_serializers()))}), a 'module:attr' reference, or an "
            "object with dumps(state, /) -> bytes and loads(data, /) -> dict"
        )
    if check:
        _self_check(serializer)
    return serializer  # type: ignore[no-any-return]


def _instantiate(spec: SerializerSpec, pickle_protocol: int | None) -> Any:
    from .serializers.pickle import PickleSerializer

    protocol = pickle.HIGHEST_PROTOCOL if pickle_protocol is None else pickle_protocol
    if spec is None:
        return PickleSerializer(protocol)
    if isinstance(spec, str) and spec in ("pickle", "cloudpickle"):
        spec = _import_spec(spec)
    if inspect.isclass(spec) and issubclass(spec, PickleSerializer):  # pickle and cloudpickle
        return spec(protocol)
    if pickle_protocol is not None and pickle_protocol != pickle.HIGHEST_PROTOCOL:
        raise SerializerConfigError(
            f"pickle_protocol={pickle_protocol} applies to the pickle and cloudpickle serializers "
            f"only, not to {spec!r}; drop pickle_protocol, or configure the protocol on the "
            "serializer instance you pass"
        )
    if isinstance(spec, str):
        return _instantiate(_import_spec(spec), None)
    if inspect.isclass(spec):
        try:
            return spec()
        except Exception as exc:
            raise SerializerConfigError(
                f"serializer class {spec.__qualname__} could not be instantiated without "
                f"arguments ({type(exc).__name__}: {exc}); pass an instance instead"
            ) from exc
    return spec


def _import_spec(spec: str) -> Any:
    names = available_serializers()
    reference = names.get(spec)
    if reference is None:
        if ":" not in spec:
            raise SerializerConfigError(
                f"unknown serializer {spec!r}; available: {', '.join(sorted(names))} "
                "(or give a 'module:attr' reference)"
            )
        reference = spec
    module_name, _, attr = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SerializerConfigError(
            f"serializer {spec!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    for part in filter(None, attr.split(".")):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise SerializerConfigError(
                f"serializer {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from exc
    return target


def sample_state() -> dict[str, Any]:
    """A small job state every serializer must round-trip: the self-check's sample."""
    from apscheduler.triggers.date import DateTrigger

    run_at = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    return {
        "version": 1,
        "id": "jobshelf-self-check",
        "func": "jobshelf._serializer:resolve_serializer",
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


def _self_check(serializer: Any) -> None:
    name = format_name(serializer)
    state = sample_state()
    try:
        data = dump_state(serializer, state)
        restored = load_state(serializer, data)
    except JobshelfError as exc:
        raise SerializerConfigError(
            f"serializer {name!r} failed its self-check on a sample job state: {exc}"
        ) from exc
    difference = state_difference(sample_state(), restored)
    if difference is not None:
        raise SerializerConfigError(
            f"serializer {name!r} failed its self-check: a sample job state did not survive "
            f"dumps()/loads() unchanged: {difference}"
        )
    logger.debug("serializer %r passed its self-check (%d bytes)", name, len(data))
