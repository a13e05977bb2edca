"""What a decoded job state must look like, and which callables it may name.

Both checks run after a state is decoded and before APScheduler resolves its callable (the
callable check imports at most a module the allow-list allows; see :mod:`._callables`): a state
that passes becomes a :class:`~apscheduler.job.Job`; one that fails is quarantined.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from .._exceptions import DeserializationError
from .._serializer import STATE_KEYS
from ._schedules import check_schedule

__all__ = ["validate_state"]

_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "executor": (str,),
    "args": (tuple,),
    "kwargs": (dict,),
    "name": (str,),
    "coalesce": (bool,),
}


def validate_state(
    state: dict[str, Any], row_id: Any, *, by_value: bool, now: dt.datetime | None = None
) -> dt.datetime | None:
    """Refuse a decoded state that APScheduler could not run safely.

    Checks the twelve keys and their types, that the state's id is the stored row's id (so a
    document cannot pose as another job), that the trigger is a trigger whose zone is a zone,
    and that the next run time is an aware datetime.

    :param by_value: the serializer may store the callable itself rather than a reference
    :param now: the moment the job is read for (default: now)
    :returns: ``None``, or, for a due job with more missed fire times than APScheduler should
        enumerate, the fire time to catch up to (see :func:`~._schedules.check_schedule`)
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
    if grace is not None and (type(grace) not in (int, float) or not 0 <= grace <= _MAX_GRACE):
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
    return check_schedule(state, row_id, now)


#: The longest misfire grace time a datetime computation can hold (APScheduler adds it to dates).
_MAX_GRACE = 100 * 365 * 86_400


def _refuse(row_id: Any, reason: str) -> None:
    raise DeserializationError(f"job {row_id!r} has a malformed state: {reason}")
