"""Admit only triggers that compute.

Decoding rebuilds a trigger without its constructor (msgpack-state sets its slots, pickle calls
``__setstate__``), and APScheduler computes fire times in its scheduler loop outside any ``try``:
an interval of 0 makes ``Job._get_run_times`` enumerate forever, an interval of 3,000,000 days
overflows after the first run and kills the scheduler thread. So a decoded job state is admitted
only when

1. its trigger holds values its own constructor would accept (and that do not stop it moving
   forward: intervals above zero, jitter of 0 or more seconds, dates inside the calendar), and
2. the fire time after the state's next run time can be computed without raising, inside the
   calendar, later than the next run time, and within a bounded amount of work; for a due job, the
   fire times APScheduler would enumerate up to now are at most :data:`MAX_MISSED_RUN_TIMES`. A
   paused job must compute its fire time from now, as resuming it does (APScheduler computes it
   holding the lock its loop needs).

The built-in cron, calendar-interval and And/Or triggers compute on a *probe*: a copy of the
trigger, of a subclass that counts the reads of the attribute their loops read on every round and
stops after :data:`MAX_WORK` of them. The probe runs APScheduler's own code, so the answer is
APScheduler's. Other triggers (custom ones, subclasses) are asked once, as APScheduler would: their
work is theirs to bound.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, BaseCombiningTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .._exceptions import DeserializationError, SerializationError
from .._marshal._triggers import cron_fields_compiled, cron_fields_problem

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_CATCH_UP_WORK",
    "MAX_DEPTH",
    "MAX_MISSED_RUN_TIMES",
    "MAX_WORK",
    "ScheduleProblem",
    "TooManyMissed",
    "bounded_next_fire_time",
    "check_outgoing_schedule",
    "check_schedule",
    "schedule_problem",
]

UTC = dt.timezone.utc
#: The earliest and latest moments a fire time or next run time may be: a day inside the
#: calendar, so that converting them to any zone (offsets are below 24 hours) cannot overflow.
EARLIEST = dt.datetime(1, 1, 2, tzinfo=UTC)
LATEST = dt.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_SPAN = (LATEST - EARLIEST).total_seconds()
_YEAR = 365 * 86_400.0
_ZERO = dt.timedelta(0)
#: The most fire times APScheduler may have to enumerate between a due job's next run time and
#: now (it builds a list of them all before running the job once when coalescing).
MAX_MISSED_RUN_TIMES = 100_000
#: Rounds of a built-in trigger's computing loop allowed for one fire time (about two centuries of
#: searching for a cron expression; one that can never match, such as 30 February, would otherwise
#: search year by year up to 9999, for seconds).
MAX_WORK = 10_000
#: Rounds allowed for enumerating the missed fire times of a due job (not an interval one: those
#: are counted), all together: about 30,000 fire times of a simple cron expression, a second's work.
MAX_CATCH_UP_WORK = 500_000
#: How deeply And/Or triggers may nest.
MAX_DEPTH = 16

_ADVICE = "remove the job and add it again with a trigger that can compute its fire times"


class ScheduleProblem(ValueError):
    """Why a trigger cannot be admitted: ``field`` (a path such as ``trigger.interval``) and
    ``reason``. ``__cause__`` is the exception the computation raised, if any."""

    def __init__(self, field: str, reason: str, *, exhausted: bool = False) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason
        self.exhausted = exhausted  # the work allowed ran out


class TooManyMissed(ScheduleProblem):
    """A due job whose missed fire times are too many to enumerate: not refused, caught up."""


def check_schedule(state: dict[str, Any], row_id: Any, now: dt.datetime | None = None) -> dt.datetime | None:
    """Refuse a decoded state whose trigger cannot compute its next fire time.

    A due job whose missed fire times are more than :data:`MAX_MISSED_RUN_TIMES` is not refused:
    the fire time it catches up to is returned (the first at or after ``now`` less its
    ``misfire_grace_time``), so that the store hands APScheduler that one instead of making it
    enumerate them all; the skipped ones would have been misses (or coalesced) anyway.

    :returns: ``None``, or the next run time to catch up to
    :raises DeserializationError: naming the job, the trigger field and the reason
    """
    catch_up, problem = _admission(state, dt.datetime.now(UTC) if now is None else now)
    if problem is not None:
        raise DeserializationError(
            f"job {row_id!r} has a schedule APScheduler cannot compute: {problem}; {_ADVICE}"
        ) from problem.__cause__
    return catch_up


def check_outgoing_schedule(state: dict[str, Any], job_id: Any) -> None:
    """Refuse to store a job whose trigger cannot compute its next fire time (exactly the jobs
    :func:`check_schedule` would refuse when they are read back).

    :raises SerializationError: naming the job, the trigger field and the reason
    """
    _catch_up, problem = _admission(state, dt.datetime.now(UTC))
    if problem is not None:
        raise SerializationError(
            f"job {job_id!r} has a schedule APScheduler cannot compute: {problem}; nothing was "
            "written. Give it a trigger whose values its constructor accepts and whose fire times "
            "stay inside the calendar"
        ) from problem.__cause__


def _admission(
    state: dict[str, Any], moment: dt.datetime
) -> tuple[dt.datetime | None, ScheduleProblem | None]:
    """``(fire time to catch up to, None)``, ``(None, None)`` when admitted as it is, or
    ``(None, problem)``."""
    problem = schedule_problem(state["trigger"], state["next_run_time"], moment)
    if not isinstance(problem, TooManyMissed):
        return None, problem
    grace = state["misfire_grace_time"]
    room = (moment - EARLIEST).total_seconds()  # a grace reaching before the calendar stops there
    since = moment - dt.timedelta(seconds=min(grace or 0, room))
    try:
        resume = bounded_next_fire_time(state["trigger"], None, since)
    except ScheduleProblem as exc:
        return None, exc
    if resume is not None and _plain(resume) and resume > state["next_run_time"]:
        return resume, None
    return None, ScheduleProblem(
        "trigger", f"has no fire time to catch up to after {since.isoformat()} ({problem})"
    )


def schedule_problem(
    trigger: Any, next_run_time: dt.datetime | None, now: dt.datetime | None = None
) -> ScheduleProblem | None:
    """Why ``trigger`` cannot be admitted with ``next_run_time`` (``None``: it can).

    ``next_run_time`` must be an aware datetime or ``None`` (checked before this is called).
    """
    try:
        _check_schedule(trigger, next_run_time, dt.datetime.now(UTC) if now is None else now)
    except ScheduleProblem as problem:
        return problem
    except Exception as exc:  # a value of a shape no check foresaw (a slot left empty, ...)
        unforeseen = ScheduleProblem("trigger", f"cannot be checked: {type(exc).__name__}: {exc}")
        unforeseen.__cause__ = exc
        return unforeseen
    return None


def bounded_next_fire_time(trigger: Any, previous: dt.datetime | None, now: dt.datetime) -> Any:
    """``trigger.get_next_fire_time(previous, now)`` within :data:`MAX_WORK` rounds for the built-in
    triggers whose computation loops (for a time not known to be a fire time, such as a lease's).

    :raises ScheduleProblem: the work allowed ran out, or the computation raised
    """
    budget = _Budget()
    return _compute(_probe(trigger, budget), budget, previous, now, MAX_WORK)


# ----------------------------------------------------------------------------- the computation


def _check_schedule(trigger: Any, next_run_time: dt.datetime | None, now: dt.datetime) -> None:
    jitter = _check_trigger(trigger, "trigger", 0, False)
    budget = _Budget()
    probe = _probe(trigger, budget)
    if next_run_time is None:  # paused: resuming computes from now, in the application's thread
        _compute(probe, budget, None, now, MAX_WORK)
        return
    if not (_plain(next_run_time) and jitter <= _YEAR):  # the next fire time is later, jitter added
        _moment(next_run_time, "next_run_time", jitter)
    key = _cron_key(trigger, next_run_time)
    cached = _CRON_NEXT.get(key) if key is not None else None
    if cached is not None and all(map(operator.is_, cached[0], trigger.fields)):
        after = cached[1]
    else:
        after = _compute(probe, budget, next_run_time, max(now, next_run_time), MAX_WORK)
        if key is not None:
            if len(_CRON_NEXT) >= _CRON_NEXT_LIMIT:
                _CRON_NEXT.clear()
            _CRON_NEXT[key] = (tuple(trigger.fields), after)  # holds the fields: their ids stay theirs
    if after is None:
        return  # the schedule is finished: APScheduler removes the job after this run
    # instants compared as timestamps: datetimes of one zone compare by wall time, and the two 02:30
    # of a night that falls back compare equal
    if not (_plain(after) and jitter <= _YEAR and after.timestamp() > next_run_time.timestamp()):
        _fire_time(after, next_run_time, jitter)
    if after > now:
        return
    # Due, and more than one fire time is due: what APScheduler enumerates before running it.
    if type(trigger) is IntervalTrigger:
        last = now if trigger.end_date is None else min(now, trigger.end_date)
        missed = (last - next_run_time).total_seconds() / trigger.interval_length
        if missed >= MAX_MISSED_RUN_TIMES:
            _missed(next_run_time, now)
        return
    budget.left = MAX_CATCH_UP_WORK
    count = 2
    try:
        while after is not None and after <= now:
            count += 1
            if count > MAX_MISSED_RUN_TIMES:
                _missed(next_run_time, now)
            previous = after
            after = _compute(probe, budget, previous, now, None)
            _fire_time(after, previous, jitter)
    except ScheduleProblem as problem:
        if problem.exhausted and not isinstance(problem, TooManyMissed):
            _missed(next_run_time, now)
        raise


# (field ids, zone, start, end, next run time) -> (the fields, the fire time after it), for cron
# triggers without jitter whose fields this process compiled: the fire time after a given one does
# not depend on now, so a job checked when written is not computed again when read.
_CRON_NEXT: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
_CRON_NEXT_LIMIT = 4096


def _cron_key(trigger: Any, next_run_time: dt.datetime) -> tuple[Any, ...] | None:
    if type(trigger) is not CronTrigger or trigger.jitter or not cron_fields_compiled(trigger.fields):
        return None
    try:
        moments = (trigger.start_date, trigger.end_date, next_run_time)
        key = (*map(id, trigger.fields), trigger.timezone, *map(_exactly, moments))
        hash(key)
    except Exception:
        return None
    return key


def _exactly(moment: Any) -> Any:
    # datetimes of one zone are equal by wall time (02:30 before and after clocks fall back); the
    # instant, zone and fold tell them apart
    return None if moment is None else (moment.timestamp(), moment.tzinfo, moment.fold)


def _compute(
    probe: Any, budget: _Budget, previous: dt.datetime | None, now: dt.datetime, work: int | None
) -> Any:
    if work is not None:
        budget.left = work
    try:
        return probe.get_next_fire_time(previous, now)
    except _OutOfWork:
        raise ScheduleProblem(
            "trigger",
            f"finds no fire time {_after(previous, now)} within the work allowed (an expression that "
            "never matches, such as 30 February, or And members that never agree)",
            exhausted=True,
        ) from None
    except Exception as exc:
        raise ScheduleProblem(
            "trigger",
            f"cannot compute its next fire time {_after(previous, now)}: {type(exc).__name__}: {exc}",
        ) from exc


def _after(previous: dt.datetime | None, now: dt.datetime) -> str:
    return f"after {previous.isoformat()}" if previous is not None else f"from {now.isoformat()}"


def _fire_time(value: Any, previous: dt.datetime, jitter: float) -> None:
    if value is None:
        return  # the schedule is finished: APScheduler removes the job after this run
    if not isinstance(value, dt.datetime):
        raise ScheduleProblem("trigger", f"computes a {type(value).__name__} as its next fire time")
    _moment(value, "trigger's next fire time", jitter)
    if value.timestamp() <= previous.timestamp():
        raise ScheduleProblem(
            "trigger",
            f"computes {value.isoformat()} as the fire time after {previous.isoformat()}: "
            "it does not move forward, so APScheduler would enumerate run times forever",
        )


def _missed(next_run_time: dt.datetime, now: dt.datetime) -> None:
    raise TooManyMissed(
        "next_run_time",
        f"is {next_run_time.isoformat()}: so many fire times of its trigger lie "
        f"between it and now ({now.isoformat()}) that APScheduler would take too long enumerating "
        f"them all before running the job (at most {MAX_MISSED_RUN_TIMES} are allowed, fewer for "
        "complex expressions)",
    )


# ----------------------------------------------------------------------------- the values


def _check_trigger(trigger: Any, path: str, depth: int, in_and: bool) -> float:
    """Check the values a trigger holds; return the most jitter its fire times can carry."""
    kind = _KINDS.get(type(trigger))
    if kind is None:  # a subclass of a built-in trigger holds its values, or a custom trigger
        kind = next((kind for cls, kind in _KINDS.items() if isinstance(trigger, cls)), None)
    if kind is None:
        if not isinstance(trigger, BaseTrigger):
            raise ScheduleProblem(path, f"is a {type(trigger).__name__}, not a trigger")
        return 0.0  # a custom trigger: its values are its own; it is asked once, as APScheduler would
    if kind == "date":
        if not _plain(trigger.run_date):
            _moment(trigger.run_date, f"{path}.run_date")
        return 0.0
    members = 0.0
    if kind == "combining":
        members = _check_combining(trigger, path, depth, in_and)
    elif kind == "interval":
        _check_interval(trigger, path)
    elif kind == "cron":
        _check_cron(trigger, path)
    else:
        _check_calendar(trigger, path)
    jitter = _jitter(trigger.jitter, path)
    if in_and and jitter:
        raise ScheduleProblem(
            f"{path}.jitter",
            f"is {jitter:g} inside an AndTrigger: jittered fire times never coincide, "
            "so the AndTrigger would search forever (set jitter on the outermost AndTrigger only)",
        )
    return members + jitter


_KINDS: dict[type, str] = {
    IntervalTrigger: "interval",
    CronTrigger: "cron",
    DateTrigger: "date",
    CalendarIntervalTrigger: "calendar",
    AndTrigger: "combining",
    OrTrigger: "combining",
    BaseCombiningTrigger: "combining",
}


def _check_combining(trigger: Any, path: str, depth: int, in_and: bool) -> float:
    if depth >= MAX_DEPTH:
        raise ScheduleProblem(path, f"nests And/Or triggers more than {MAX_DEPTH} deep")
    members = trigger.triggers
    if type(members) is not list:
        raise ScheduleProblem(f"{path}.triggers", f"is a {type(members).__name__}, not a list of triggers")
    if not members and isinstance(trigger, AndTrigger):
        raise ScheduleProblem(f"{path}.triggers", "is empty: an AndTrigger without members raises")
    in_and = in_and or isinstance(trigger, AndTrigger)
    return max((_check_trigger(member, f"{path}.triggers[{index}]", depth + 1, in_and)
                for index, member in enumerate(members)), default=0.0)  # fmt: skip


def _plain(value: Any) -> bool:
    """The common case of :func:`_moment`, quickly: an aware datetime of years 2 to 9997."""
    try:  # a zone that raises here is worded by _moment
        return type(value) is dt.datetime and 1 < value.year < 9998 and value.utcoffset() is not None
    except Exception:
        return False


def _check_interval(trigger: Any, path: str) -> None:
    interval, end = trigger.interval, trigger.end_date
    if (
        type(interval) is dt.timedelta
        and interval > _ZERO
        and trigger.interval_length == interval.total_seconds()
        and isinstance(trigger.timezone, dt.tzinfo)
        and _plain(trigger.start_date)
        and (end is None or _plain(end))
    ):
        return
    _zone(trigger.timezone, f"{path}.timezone")
    _moment(trigger.start_date, f"{path}.start_date")
    if trigger.end_date is not None:
        _moment(trigger.end_date, f"{path}.end_date")
    interval = trigger.interval
    if type(interval) is not dt.timedelta:
        raise ScheduleProblem(f"{path}.interval", f"is a {type(interval).__name__}, not a timedelta")
    if interval <= _ZERO:
        raise ScheduleProblem(
            f"{path}.interval",
            f"is {interval}: an interval must be above zero (IntervalTrigger never "
            "holds 0, and with 0 or less APScheduler enumerates run times forever)",
        )
    if trigger.interval_length != interval.total_seconds():
        raise ScheduleProblem(f"{path}.interval_length", f"is {trigger.interval_length!r}, not the interval")


def _check_cron(trigger: Any, path: str) -> None:
    _zone(trigger.timezone, f"{path}.timezone")
    for name in ("start_date", "end_date"):
        value = getattr(trigger, name)
        if value is not None and not _plain(value):
            _moment(value, f"{path}.{name}")
    problem = cron_fields_problem(trigger.fields)
    if problem is not None:
        raise ScheduleProblem(f"{path}.fields", problem)


def _check_calendar(trigger: Any, path: str) -> None:
    zone = trigger.timezone
    _zone(zone, f"{path}.timezone")
    amounts = {name: getattr(trigger, name) for name in ("years", "months", "weeks", "days")}
    for name, amount in amounts.items():
        if type(amount) is not int or not 0 <= amount <= 9999:
            raise ScheduleProblem(f"{path}.{name}", f"is {amount!r}, expected a whole number from 0 to 9999")
    if not any(amounts.values()):
        raise ScheduleProblem(f"{path}.interval", "is 0: CalendarIntervalTrigger needs at least 1 day")
    time = trigger._time
    if type(time) is not dt.time or time.tzinfo is not zone:
        raise ScheduleProblem(f"{path}.time", f"is {time!r}, not a time of day in the trigger's zone")
    start, end = trigger.start_date, trigger.end_date
    if not isinstance(start, dt.date):
        raise ScheduleProblem(f"{path}.start_date", f"is a {type(start).__name__}, not a date")
    if end is not None and (type(end) is not dt.date or type(start) is not dt.date):
        raise ScheduleProblem(f"{path}.end_date", "must be a date, with a date as start_date")
    if end is not None and end < start:
        raise ScheduleProblem(f"{path}.end_date", f"is {end}, before start_date {start}")


def _zone(zone: Any, path: str) -> None:
    if not isinstance(zone, dt.tzinfo):
        raise ScheduleProblem(path, f"is {type(zone).__name__}, not a time zone")


def _moment(value: Any, path: str, jitter: float = 0.0) -> None:
    if not isinstance(value, dt.datetime):
        raise ScheduleProblem(path, f"is a {type(value).__name__}, not a datetime")
    try:
        naive = value.utcoffset() is None
        # years 2 to 9997 are inside whatever the offset (under a day) and a jitter of up to a year
        inside = (
            naive
            or (1 < value.year < 9998 and jitter <= _YEAR)
            or (EARLIEST <= value <= LATEST - dt.timedelta(seconds=jitter))
        )
    except Exception as exc:
        raise ScheduleProblem(path, f"cannot be placed in time ({type(exc).__name__}: {exc})") from exc
    if naive:
        raise ScheduleProblem(path, "is a naive datetime (no time zone)")
    if not inside:
        extra = f" with its jitter of up to {jitter:g} s" if jitter else ""
        raise ScheduleProblem(
            path,
            f"is {value.isoformat()}{extra}, outside the dates APScheduler can compute with "
            f"({EARLIEST.date()} to {LATEST.date()} UTC)",
        )


def _jitter(value: Any, path: str) -> float:
    if value is None:
        return 0.0
    if type(value) is int and 0 <= value <= _YEAR:
        return float(value)
    if type(value) not in (int, float):
        raise ScheduleProblem(f"{path}.jitter", f"is a {type(value).__name__}, expected seconds or None")
    if (type(value) is float and not math.isfinite(value)) or not 0 <= value <= _SPAN:
        raise ScheduleProblem(
            f"{path}.jitter", f"is {value!r}: jitter is a delay of 0 to {_SPAN:.0f} seconds"
        )
    return float(value)


# ----------------------------------------------------------------------------- probes


class _OutOfWork(Exception):
    pass


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_WORK


def _counted(slot: str) -> Any:
    """A property that counts one round of work from the probe's budget, then reads ``slot``."""
    read_slot = operator.attrgetter(slot)

    def read(self: Any) -> Any:
        budget = self._budget  # this runs on every round of the trigger's search
        budget.left -= 1
        if budget.left < 0:
            raise _OutOfWork
        return read_slot(self)

    return property(read)


class _CronProbe(CronTrigger):  # type: ignore[misc]
    __slots__ = ("_budget", "_fields")
    fields = _counted("_fields")  # CronTrigger.get_next_fire_time reads it on every round


class _CalendarProbe(CalendarIntervalTrigger):  # type: ignore[misc]
    __slots__ = ("_budget", "_months")
    months = _counted("_months")  # CalendarIntervalTrigger.get_next_fire_time reads it every round


class _AndProbe(AndTrigger):  # type: ignore[misc]
    __slots__ = ("_budget", "_members")
    triggers = _counted("_members")  # AndTrigger.get_next_fire_time reads it on every round


class _OrProbe(OrTrigger):  # type: ignore[misc]
    __slots__ = ("_budget", "_members")
    triggers = _counted("_members")


_PROBES: dict[type, tuple[Any, tuple[str, ...], str]] = {
    CronTrigger: (_CronProbe, ("timezone", "start_date", "end_date", "jitter"), "fields"),
    CalendarIntervalTrigger: (
        _CalendarProbe,
        ("years", "weeks", "days", "start_date", "end_date", "timezone", "jitter", "_time"),
        "months",
    ),
    AndTrigger: (_AndProbe, ("jitter",), "triggers"),
    OrTrigger: (_OrProbe, ("jitter",), "triggers"),
}


def _probe(trigger: Any, budget: _Budget) -> Any:
    """``trigger`` itself, or for an exact built-in trigger whose computation loops, a bounded copy."""
    entry = _PROBES.get(type(trigger))
    if entry is None:
        return trigger
    cls, names, counted = entry
    probe = cls.__new__(cls)
    for name in names:
        setattr(probe, name, getattr(trigger, name))
    value = getattr(trigger, counted)
    if counted == "triggers":
        value = [_probe(member, budget) for member in value]
    setattr(probe, f"_{'members' if counted == 'triggers' else counted}", value)
    probe._budget = budget
    return probe
