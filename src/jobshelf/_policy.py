"""What a decoded job state must look like, and which callables it may name.

Both checks run after a state is decoded and before anything in it is resolved or imported: a
state that passes becomes a :class:`~apscheduler.job.Job`; one that fails is quarantined.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from ._exceptions import DeserializationError, SerializationError
from ._schedule_check import check_schedule
from ._serializer import STATE_KEYS

__all__ = ["CallablePolicy", "validate_state"]

_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "executor": (str,),
    "args": (tuple,),
    "kwargs": (dict,),
    "name": (str,),
    "coalesce": (bool,),
}


def validate_state(state: dict[str, Any], row_id: Any, *, by_value: bool) -> None:
    """Refuse a decoded state that APScheduler could not run safely.

    Checks the twelve keys and their types, that the state's id is the stored row's id (so a
    document cannot pose as another job), that the trigger is a trigger whose zone is a zone,
    and that the next run time is an aware datetime.

    :param by_value: the serializer may store the callable itself rather than a reference
    :raises DeserializationError: naming the job and what is wrong
    """
    if state.keys() != STATE_KEYS:
        missing, extra = sorted(STATE_KEYS - state.keys()), sorted(map(str, state.keys() - STATE_KEYS))
        _refuse(row_id, f"it has the wrong keys (missing {missing}, unexpected {extra})")
    if state["version"] != 1 or type(state["version"]) is not int:
        _refuse(row_id, f"its state version is {state['version']!r}; this APScheduler reads version 1")
    if state["id"] != row_id or type(state["id"]) is not str:
        _refuse(row_id, f"its state names another job id, {state['id']!r}")
    func = state["func"]
    if not (type(func) is str or (by_value and callable(func))):
        _refuse(row_id, f"its callable is {type(func).__name__}, not a 'module:function' reference")
    for key, types in _PLAIN_TYPES.items():
        if type(state[key]) not in types:
            _refuse(row_id, f"{key} is {type(state[key]).__name__}, expected {types[0].__name__}")
    if not all(type(key) is str for key in state["kwargs"]):
        _refuse(row_id, "kwargs has a key that is not a string")
    grace = state["misfire_grace_time"]
    if grace is not None and (type(grace) not in (int, float) or grace < 0):
        _refuse(row_id, f"misfire_grace_time is {grace!r}, expected seconds or None")
    instances = state["max_instances"]
    if type(instances) is not int or instances < 1:
        _refuse(row_id, f"max_instances is {instances!r}, expected a positive int")
    next_run_time = state["next_run_time"]
    if next_run_time is not None and (
        not isinstance(next_run_time, dt.datetime) or next_run_time.utcoffset() is None
    ):
        _refuse(row_id, f"next_run_time is {next_run_time!r}, expected an aware datetime or None")
    trigger = state["trigger"]
    if not isinstance(trigger, BaseTrigger):
        _refuse(row_id, f"its trigger is {type(trigger).__name__}, not an APScheduler trigger")
    zone = getattr(trigger, "timezone", None)
    if zone is not None and not isinstance(zone, dt.tzinfo):
        _refuse(row_id, f"its trigger's timezone is {type(zone).__name__}, not a time zone")
    check_schedule(state, row_id)


def _refuse(row_id: Any, reason: str) -> None:
    raise DeserializationError(f"job {row_id!r} has a malformed state: {reason}")


_REFERENCE = re.compile(r"[\w.]+:[\w.<>]+")


class CallablePolicy:
    """Which callables a stored job may name: the ``allowed_callables=`` list.

    Each pattern is a module name (that module and its submodules: ``"myapp.jobs"``) or a
    ``"module:qualname"`` pattern with shell-style wildcards (``"myapp.tasks:send_*"``).

    :param patterns: the allow-list; ``None`` allows every callable (the stock store's behaviour)
    :param allow_by_value: allow callables stored by value (cloudpickle's lambdas and closures),
        which have no reference to check before they are unpickled
    """

    def __init__(self, patterns: Iterable[str] | None = None, *, allow_by_value: bool = False) -> None:
        if isinstance(patterns, str):
            raise TypeError(f"allowed_callables must be a list, got the string {patterns!r}")
        self.patterns = None if patterns is None else tuple(patterns)
        self.allow_by_value = allow_by_value or self.patterns is None
        self._modules: tuple[str, ...] = ()
        self._globs: tuple[str, ...] = ()
        for pattern in self.patterns or ():
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"allowed_callables holds {pattern!r}; give module names or 'module:name'")
            if ":" in pattern:
                self._globs += (pattern,)
            else:
                self._modules += (pattern,)

    @property
    def restricts(self) -> bool:
        """True when an allow-list is configured."""
        return self.patterns is not None

    def allows(self, reference: str) -> bool:
        """True when the ``"module:qualname"`` reference is allowed (nothing is imported)."""
        if self.patterns is None:
            return True
        if not _REFERENCE.fullmatch(reference):
            return False
        module = reference.partition(":")[0]
        if any(module == allowed or module.startswith(f"{allowed}.") for allowed in self._modules):
            return True
        return any(fnmatch.fnmatchcase(reference, glob) for glob in self._globs)

    def allows_global(self, module: str, name: str) -> bool:
        """True when an unpickler may load ``module.name``: the module is allowed, or the reference
        matches a pattern. Used for classes in arguments as well as for the callable."""
        return self.allows(f"{module}:{name}")

    def check_state(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse a decoded state whose callable is not allowed.

        :raises DeserializationError: naming the job and the reference
        """
        problem = self._problem(state["func"])
        if problem:
            raise DeserializationError(f"job {job_id!r} {problem}")

    def check_outgoing(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse to store a job whose callable is not allowed.

        :raises SerializationError: naming the job and the reference
        """
        problem = self._problem(state["func"])
        if problem:
            raise SerializationError(f"job {job_id!r} {problem}; nothing was written")

    def _problem(self, func: Any) -> str | None:
        if self.patterns is None:
            return None
        if isinstance(func, str):
            if self.allows(func):
                return None
            return (
                f"calls {func!r}, which allowed_callables does not allow ({list(self.patterns)}); "
                "add its module to allowed_callables if it is yours"
            )
        if self.allow_by_value:
            return None
        return (
            f"carries its callable by value ({getattr(func, '__qualname__', type(func).__name__)}), "
            "which no allow-list can check before unpickling; pass allow_by_value=True to trust it"
        )

    def __repr__(self) -> str:
        return f"CallablePolicy({self.patterns!r}, allow_by_value={self.allow_by_value})"
