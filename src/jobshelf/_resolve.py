"""How a ``serializer=`` spec becomes a checked serializer: names, entry points, references."""

from __future__ import annotations

import importlib
import inspect
import logging
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from ._compare import state_difference
from ._exceptions import JobshelfError, SerializerConfigError
from ._serializer import (
    Serializer,
    SerializerSpec,
    dump_state,
    format_name,
    load_state,
    pickle_protocol_number,
    sample_state,
)

__all__ = ["BUILTIN_SERIALIZERS", "ENTRY_POINT_GROUP", "available_serializers", "resolve_serializer"]

logger = logging.getLogger("jobshelf")

#: Entry point group under which installed packages register serializers by name.
ENTRY_POINT_GROUP = "jobshelf.serializers"

#: The serializers that ship with jobshelf, by name (found even without installed metadata).
BUILTIN_SERIALIZERS: dict[str, str] = {
    "pickle": "jobshelf.serializers.pickle:PickleSerializer",
    "cloudpickle": "jobshelf.serializers.cloudpickle:CloudPickleSerializer",
    "msgpack": "jobshelf.serializers.msgpack:MsgpackStateSerializer",
}


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
    spec: SerializerSpec = None, *, pickle_protocol: Any = pickle.HIGHEST_PROTOCOL, check: bool = True
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


def _instantiate(spec: SerializerSpec, pickle_protocol: Any) -> Any:
    try:
        protocol = pickle_protocol_number(pickle_protocol)
    except ValueError as exc:
        raise SerializerConfigError(f"pickle_protocol: {exc}") from None
    if spec is None:
        spec = "pickle"
    if isinstance(spec, str) and spec in ("pickle", "cloudpickle"):
        spec = _import_spec(spec)  # by name, like any plug-in: resolution imports no serializer module
    if inspect.isclass(spec) and _takes_pickle_protocol(spec):  # pickle and cloudpickle
        pickle_family: Any = spec
        return pickle_family(protocol)
    if protocol != pickle.HIGHEST_PROTOCOL:
        raise SerializerConfigError(
            f"pickle_protocol={pickle_protocol} applies to the pickle and cloudpickle serializers "
            f"only, not to {spec!r}; drop pickle_protocol, or configure the protocol on the "
            "serializer instance you pass"
        )
    if isinstance(spec, str):
        return _instantiate(_import_spec(spec), pickle.HIGHEST_PROTOCOL)
    if inspect.isclass(spec):
        try:
            return spec()
        except Exception as exc:
            raise SerializerConfigError(
                f"serializer class {spec.__qualname__} could not be instantiated without "
                f"arguments ({type(exc).__name__}: {exc}); pass an instance instead"
            ) from exc
    return spec


def _takes_pickle_protocol(cls: type) -> bool:
    """A pickle-family serializer class (it declares ``pickle_family = True``) whose constructor
    takes the protocol."""
    if getattr(cls, "pickle_family", False) is not True:
        return False
    try:
        return "protocol" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


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
