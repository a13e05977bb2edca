"""``StateMarshaller``: reduce values to ``(kind, payload)`` and construct them back, with paths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from .._exceptions import DeserializationError, UnsupportedValueError
from ._triggers import REGISTRY_BY_CLASS, REGISTRY_BY_NAME, TriggerCodec
from ._values import VALUE_CONSTRUCTORS, VALUE_REDUCERS
from ._zones import ZONE_KINDS, construct_zone, reduce_zone, warm_up

__all__ = ["KINDS", "StateMarshaller"]

#: Every kind a payload may name, in the order of their msgpack-state ext codes.
KINDS = (*VALUE_CONSTRUCTORS, *ZONE_KINDS, "trigger")


def _any_int(value: int) -> bool:
    return True


class StateMarshaller:
    """Reduces values to ``(kind, payload)`` and constructs them back; configured once.

    Constructing imports nothing and builds only the kinds in :data:`KINDS`: value kinds, zones
    (known keys only) and triggers found in the registry (:func:`jobshelf.register_trigger`,
    read at each lookup) or in ``triggers``.

    :param triggers: extra trigger codecs for this marshaller only (they win over the registry)
    :param format_name: the name used in error messages
    :param native_int: which ints the format stores natively (others are reduced to kind ``int``);
        default: every int
    """

    def __init__(
        self,
        triggers: Iterable[TriggerCodec] = (),
        format_name: str = "msgpack-state",
        native_int: Callable[[int], bool] = _any_int,
    ) -> None:
        self.format_name = format_name
        self._native_int = native_int
        self._local_by_class: dict[type, TriggerCodec] = {}
        self._local_by_name: dict[str, TriggerCodec] = {}
        for codec in triggers:
            if codec.name in self._local_by_name:
                raise ValueError(f"trigger name {codec.name!r} is given twice")
            self._local_by_class[codec.cls] = codec
            self._local_by_name[codec.name] = codec
        warm_up()

    def trigger_codec(self, cls: type) -> TriggerCodec | None:
        """The codec this marshaller uses for exactly ``cls``, or ``None`` (registry read now)."""
        return self._local_by_class.get(cls) or REGISTRY_BY_CLASS.get(cls)

    def reduce(self, value: Any) -> tuple[str, Any]:
        """Return ``(kind, payload)`` for a value that is not plain data.

        :raises UnsupportedValueError: the value has no encoding (``path`` is ``"value"``)
        """
        value_type = type(value)
        try:
            reducer = VALUE_REDUCERS.get(value_type)
            if reducer is not None:
                return reducer(value)
            codec = REGISTRY_BY_CLASS.get(value_type)
            if self._local_by_class:
                codec = self._local_by_class.get(value_type, codec)  # a serializer's own wins
            if codec is not None:
                return "trigger", [codec.name, *codec.to_state(value)]
            if isinstance(value, dt.tzinfo):
                reduced = reduce_zone(value)
                if reduced is not None:
                    return reduced
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
                if type(payload) is not list or not payload:
                    raise ValueError("expected [name, ...fields]")
                name, *state = payload
                codec = REGISTRY_BY_NAME.get(name)
                if self._local_by_name:
                    codec = self._local_by_name.get(name, codec)
                if codec is None:
                    raise DeserializationError(
                        f"trigger {name!r} is not registered; call "
                        "jobshelf.register_trigger(...) for it before the scheduler starts"
                    )
                return codec.from_state(state)
            if kind in ZONE_KINDS:
                return construct_zone(kind, payload)
            constructor = VALUE_CONSTRUCTORS.get(kind)
            if constructor is None:
                raise DeserializationError(f"unknown value kind {kind!r}")
            return constructor(payload)
        except DeserializationError:
            raise
        except Exception as exc:
            raise DeserializationError(
                f"malformed {kind} payload {_short(payload)}: {type(exc).__name__}: {exc}"
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
            if not self._native_int(value):
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


def _short(payload: Any, limit: int = 120) -> str:
    text = repr(payload)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
