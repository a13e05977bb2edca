"""Registering a job again: ``add_job(..., replace_existing=True)`` at every worker's start.

Web apps register their jobs with fixed ids each time a worker starts. APScheduler turns that into
``add_job`` (the id is taken) then ``update_job`` with a next run time computed anew, which would
move every schedule and release every lease another process holds. In shared mode a registration
whose definition is unchanged is therefore not written: the stored schedule (next run time, paused
or not) and any lease stand. A changed definition replaces the stored job, as in APScheduler.

The definition is the job's state without ``next_run_time``; an interval trigger's ``start_date``
and a calendar-interval trigger's are left out when they are the defaults APScheduler filled in at
registration (now plus the interval; today), since those change at every registration. Job
arguments that differ by ``==`` but pickle to the same bytes (instances of a class without
``__eq__``, compared by identity) are the same.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
from typing import Any

from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .._compare import state_difference

__all__ = ["RegistrationMarks", "definition_difference"]

#: The pickle protocol arguments are compared with (fixed: the bytes of one protocol compare).
_PROTOCOL = 4
#: How close to "now plus the interval" a start date must be to count as the default (seconds).
_DEFAULT_START_SLACK = 60.0


class RegistrationMarks:
    """Which job the current thread just failed to insert (its id was taken), with the encoded
    state it tried: APScheduler's ``replace_existing`` follows with ``update_job`` of the very same
    job, which is recognised by its id and encoded state (a later, different update is not)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def mark(self, job_id: Any, data: Any) -> None:
        self._local.mark = (job_id, data)

    def take(self, job_id: Any, data: Any) -> bool:
        """True when this update is the registration just marked (the mark is used up)."""
        mark = getattr(self._local, "mark", None)
        self._local.mark = None
        return mark is not None and mark[0] == job_id and mark[1] == data


def definition_difference(stored: dict[str, Any], registered: dict[str, Any]) -> str | None:
    """``None`` when ``registered`` defines the same job as ``stored``; else how they differ."""
    left = {key: value for key, value in stored.items() if key != "next_run_time"}
    right = {key: value for key, value in registered.items() if key != "next_run_time"}
    for key in ("args", "kwargs"):  # objects without __eq__ (compared by identity) that pickle alike
        if left.get(key) != right.get(key) and _pickle_alike(left.get(key), right.get(key)):
            right[key] = left[key]
    old, new = left.get("trigger"), right.get("trigger")
    if old is not None and new is not None and type(old) is type(new):
        old_state, new_state = old.__getstate__(), new.__getstate__()
        if _defaulted_start(new):
            new_state["start_date"] = old_state.get("start_date")
        left["trigger"], right["trigger"] = old_state, new_state
    return state_difference(left, right, "job")


def _pickle_alike(old: Any, new: Any) -> bool:
    """The same value by its pickled form: how APScheduler itself stores job arguments."""
    try:
        return pickle.dumps(old, _PROTOCOL) == pickle.dumps(new, _PROTOCOL)
    except Exception:  # unpicklable: as compared
        return False


def _defaulted_start(trigger: Any) -> bool:
    """The trigger's start date is the one APScheduler fills in when none is given."""
    start = getattr(trigger, "start_date", None)
    if isinstance(trigger, IntervalTrigger) and isinstance(start, dt.datetime):
        expected = dt.datetime.now(dt.timezone.utc) + trigger.interval
        return bool(abs((start - expected).total_seconds()) <= _DEFAULT_START_SLACK)
    if isinstance(trigger, CalendarIntervalTrigger) and isinstance(start, dt.date):
        return bool(start == dt.date.today())
    return False
