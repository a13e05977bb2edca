"""Restricted unpickling: what a pickle may name when ``allowed_callables`` is set.

:class:`pickle.Unpickler` imports and calls whatever a payload names. This unpickler's
``find_class`` admits only what an APScheduler job state is made of (datetimes, zones, the
built-in and registered triggers, their cron fields) plus the modules the application allowed. Two
doors APScheduler's own pickles need are guarded rather than opened: ``getattr`` (protocol 5
pickles a ``ZoneInfo`` through it) answers only ``ZoneInfo._unpickle``, and ``AndTrigger``/
``OrTrigger``, whose ``__setstate__`` imports member classes by name, check those names first.
"""

from __future__ import annotations

import io
import pickle
import zoneinfo
from collections.abc import Callable
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.util import obj_to_ref

from .._marshal import registered_triggers

__all__ = ["Unresolved", "restricted_loads"]

_SAFE_GLOBALS = frozenset(
    (module, name)
    for modules, names in (
        (("builtins", "__builtin__"),
         ("set", "frozenset", "bytearray", "complex", "slice", "range", "object")),
        (("_codecs",), ("encode",)),
        (("copyreg", "copy_reg"), ("_reconstructor",)),
        (("datetime",), ("datetime", "date", "time", "timedelta", "timezone", "tzinfo")),
        (("zoneinfo", "zoneinfo._zoneinfo"), ("ZoneInfo", "ZoneInfo._unpickle")),
        (("pytz",), ("_p", "_UTC", "FixedOffset")),
        (("decimal", "_decimal", "_pydecimal"), ("Decimal",)),
        (("uuid",), ("UUID", "SafeUUID")),
        (("collections",), ("OrderedDict", "deque")),
    )
    for module in modules
    for name in names
)  # fmt: skip


def _safe_getattr(obj: Any, name: str) -> Any:
    if obj is zoneinfo.ZoneInfo and name == "_unpickle":
        return zoneinfo.ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed in a job state")


def _check_members(members: Any, allows_reference: Callable[[str], bool]) -> None:
    if not isinstance(members, (list, tuple)):
        raise pickle.UnpicklingError("malformed combining trigger state")
    for item in members:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
            raise pickle.UnpicklingError("malformed combining trigger member")
        reference, state = item
        if not allows_reference(reference):
            raise pickle.UnpicklingError(f"trigger member {reference!r} is not an allowed trigger class")
        if reference in _COMBINING_REFS:
            _check_members(state.get("triggers") if isinstance(state, dict) else None, allows_reference)


_COMBINING_REFS = frozenset((obj_to_ref(AndTrigger), obj_to_ref(OrTrigger)))


def _guarded(cls: type, allows_reference: Callable[[str], bool]) -> type:
    class Guarded(cls):  # type: ignore[misc]
        __slots__ = ()

        def __setstate__(self, state: dict[str, Any]) -> None:
            _check_members(state.get("triggers") if isinstance(state, dict) else None, allows_reference)
            cls.__setstate__(self, state)  # type: ignore[attr-defined]
            self.__class__ = cls

    Guarded.__name__ = Guarded.__qualname__ = cls.__name__
    return Guarded


class Unresolved:
    """Stands in, when a pickle is only being looked at, for a class or function it names but that is
    not part of a job state: nothing is imported and nothing is called."""

    __module_name__ = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.args))
        state = f" state={self.state!r}" if self.state is not None else ""
        return f"<unresolved {self.__module_name__}.{type(self).__qualname__}({shown}){state}>"


def _stub(module: str, name: str) -> type:
    return type(name, (Unresolved,), {"__module_name__": module, "__qualname__": name})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allows_global: Callable[[str, str], bool], lenient: bool = False) -> None:
        super().__init__(io.BytesIO(data))
        self._allows_global = allows_global
        self._lenient = lenient
        self._guarded = {
            AndTrigger: _guarded(AndTrigger, self._allows_reference),
            OrTrigger: _guarded(OrTrigger, self._allows_reference),
        }

    def _allows_reference(self, reference: str) -> bool:
        module, _, name = reference.partition(":")
        return self._is_trigger_class(module, name) or self._allows_global(module, name)

    @staticmethod
    def _is_trigger_class(module: str, name: str) -> bool:
        known = {obj_to_ref(codec.cls) for codec in registered_triggers().values()}
        return f"{module}:{name}" in known

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("builtins", "getattr"), ("__builtin__", "getattr")):
            return _safe_getattr
        admitted = (module, name) in _SAFE_GLOBALS or self._allows_global(module, name)
        if not admitted and module.startswith("apscheduler.triggers."):
            found = super().find_class(module, name)  # already imported by jobshelf itself
            admitted = isinstance(found, type) and found.__module__.startswith("apscheduler.triggers.")
            if admitted and issubclass(found, BaseTrigger):
                admitted = self._is_trigger_class(module, name)
        if not admitted and self._lenient:
            return _stub(module, name)
        if not admitted:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not part of a job state and not allowed "
                "(allowed_callables, or the CLI's --allow)"
            )
        found = super().find_class(module, name)
        return self._guarded.get(found, found)


def restricted_loads(data: bytes, allows_global: Callable[[str, str], bool], *, lenient: bool = False) -> Any:
    """Unpickle ``data`` admitting only job-state classes and what ``allows_global`` allows.

    With ``lenient`` (for looking, never for running), anything else becomes an
    :class:`Unresolved` stand-in instead of an error.
    """
    return _RestrictedUnpickler(data, allows_global, lenient).load()
