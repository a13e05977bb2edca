"""Hypothesis strategies for realistic APScheduler 3 job states.

Shared by jobshelf's own tests and :func:`jobshelf.testing.check_serializer`. Narrow what is
generated with ``capabilities`` (see :data:`ALL_CAPABILITIES`) to what a serializer declares.
"""

from __future__ import annotations

import datetime as dt
import functools
import string
import zoneinfo
from collections.abc import Collection
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import assume
from hypothesis import strategies as st

__all__ = [
    "ALL_CAPABILITIES",
    "DST_ZONES",
    "aware_datetimes",
    "cron_triggers",
    "example_job",
    "job_states",
    "triggers",
    "values",
    "zones",
]

#: What a serializer may declare it supports; strategies generate only what is declared.
ALL_CAPABILITIES = frozenset(
    {
        "pytz",  # pytz zones (kept as pytz objects)
        "naive-datetimes",  # datetimes and times without a zone in args/kwargs
        "big-ints",  # ints outside the signed/unsigned 64-bit range
        "non-finite-floats",  # nan, inf, -inf
        "bytes",
        "sets",  # set and frozenset
        "decimal",
        "uuid",
        "non-str-keys",  # dict keys that are not str (ints, tuples, datetimes, ...)
        "temporal-values",  # date, time, timedelta, datetime and zones as argument values
    }
)

#: Zones with daylight saving switches (and a 30-minute one) that every round trip must survive.
DST_ZONES = (
    "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo",
    "Pacific/Chatham", "Europe/London", "Asia/Kolkata", "UTC",
)  # fmt: skip


def example_job(*args: Any, **kwargs: Any) -> None:
    """The callable generated job states refer to (``jobshelf.testing.strategies:example_job``)."""


EXAMPLE_JOB_REF = f"{__name__}:example_job"


@functools.cache
def _pytz_zones() -> st.SearchStrategy[dt.tzinfo]:
    import pytz
    from hypothesis.extra.pytz import timezones as pytz_timezones

    return st.one_of(st.sampled_from(DST_ZONES).map(pytz.timezone), pytz_timezones())


@functools.cache
def _fixed_offsets() -> st.SearchStrategy[dt.timezone]:
    # whole seconds, like every real zone (pytz's LMT offsets included)
    offsets = st.integers(-86399, 86399).map(lambda seconds: dt.timedelta(seconds=seconds))
    names = st.none() | st.text(string.ascii_letters + "+-:", min_size=1, max_size=8)
    return st.builds(lambda o, n: dt.timezone(o) if n is None else dt.timezone(o, n), offsets, names)


def zones(capabilities: Collection[str] = ALL_CAPABILITIES) -> st.SearchStrategy[dt.tzinfo]:
    """zoneinfo zones (DST-switching ones weighted in), fixed offsets, UTC, and pytz zones."""
    return _zones(frozenset(capabilities))


@functools.cache
def _zones(capabilities: frozenset[str]) -> st.SearchStrategy[dt.tzinfo]:
    choices: list[st.SearchStrategy[Any]] = [
        st.sampled_from(DST_ZONES).map(zoneinfo.ZoneInfo),
        st.timezones(),
        _fixed_offsets(),
        st.just(dt.timezone.utc),
    ]
    if "pytz" in capabilities:
        choices.append(_pytz_zones())
    return st.one_of(choices)


def aware_datetimes(
    capabilities: Collection[str] = ALL_CAPABILITIES,
    min_year: int = 1,
    max_year: int = 9999,
) -> st.SearchStrategy[dt.datetime]:
    """Aware datetimes at microsecond precision, with folds, in any supported zone."""
    return _aware_datetimes(frozenset(capabilities), min_year, max_year)


@functools.cache
def _aware_datetimes(
    capabilities: frozenset[str],
    min_year: int = 1,
    max_year: int = 9999,
) -> st.SearchStrategy[dt.datetime]:
    return st.datetimes(
        min_value=dt.datetime(min_year, 1, 2),
        max_value=dt.datetime(max_year, 12, 30),
        timezones=zones(capabilities),
        allow_imaginary=False,
    )


def _field_expressions(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    step = st.integers(1, max(1, high - low))
    ranges = st.tuples(number, number).map(sorted)
    options = [
        st.just("*"),
        number.map(str),
        step.map(lambda n: f"*/{n}"),
        ranges.map(lambda r: f"{r[0]}-{r[1]}"),
        st.tuples(ranges, step).map(lambda x: f"{x[0][0]}-{x[0][1]}/{x[1]}"),
        st.lists(number, min_size=2, max_size=4, unique=True).map(lambda v: ",".join(map(str, v))),
    ]
    if names:
        options.append(st.sampled_from(names))
        options.append(st.tuples(st.sampled_from(names), st.sampled_from(names)).map("{0[0]}-{0[1]}".format))
    return st.one_of(options)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CRON_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "year": _field_expressions(1970, 2200),
    "month": _field_expressions(1, 12, _MONTHS),
    "day": st.one_of(
        _field_expressions(1, 31),
        st.sampled_from(["last", "1st mon", "2nd wed", "3rd fri", "last sun", "5th sat"]),
    ),
    "week": _field_expressions(1, 53),
    "day_of_week": _field_expressions(0, 6, _WEEKDAYS),
    "hour": _field_expressions(0, 23),
    "minute": _field_expressions(0, 59),
    "second": _field_expressions(0, 59),
}

_jitters = st.none() | st.integers(1, 3600)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def cron_triggers(capabilities: Collection[str] = ALL_CAPABILITIES) -> st.SearchStrategy[CronTrigger]:
    """CronTriggers with expressions across all fields, start/end dates, zone and jitter."""
    return _cron_triggers(frozenset(capabilities))


@functools.cache
def _cron_triggers(capabilities: frozenset[str]) -> st.SearchStrategy[CronTrigger]:
    return _draw_cron_trigger(aware_datetimes(capabilities, 1971, 2200), zones(capabilities))


@st.composite
def _draw_cron_trigger(
    draw: st.DrawFn, datetimes: st.SearchStrategy[dt.datetime], zone: st.SearchStrategy[dt.tzinfo]
) -> CronTrigger:
    chosen = draw(st.sets(st.sampled_from(sorted(_CRON_FIELDS)), min_size=1))
    fields = {name: draw(_CRON_FIELDS[name]) for name in chosen}
    start = draw(_maybe(datetimes))
    end = draw(_maybe(datetimes))
    try:
        return CronTrigger(
            **fields, start_date=start, end_date=end, timezone=draw(zone),
            jitter=draw(_jitters),
        )  # fmt: skip
    except ValueError:  # e.g. "31" in a month field, an empty range: not a valid trigger
        assume(False)
        raise


_intervals = st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=dt.timedelta(days=3660))


@st.composite
def _interval_triggers(
    draw: st.DrawFn, datetimes: st.SearchStrategy[dt.datetime], zone_strategy: st.SearchStrategy[dt.tzinfo]
) -> IntervalTrigger:
    interval = draw(_intervals)
    zone = draw(zone_strategy)
    start = draw(datetimes)
    trigger = IntervalTrigger(seconds=1, start_date=start, timezone=zone, jitter=draw(_jitters))
    state = trigger.__getstate__()
    state["interval"] = interval  # microseconds to years: set as APScheduler restores it
    state["end_date"] = draw(_maybe(datetimes))
    trigger.__setstate__(state)
    return trigger


_calendar_zones = st.one_of(st.sampled_from(DST_ZONES).map(zoneinfo.ZoneInfo), _fixed_offsets())


@st.composite
def _calendar_triggers(draw: st.DrawFn) -> CalendarIntervalTrigger:
    amounts = draw(st.tuples(*[st.integers(0, 3)] * 4).filter(any))
    start = draw(st.dates(dt.date(1971, 1, 1), dt.date(2200, 1, 1)))
    end = draw(_maybe(st.dates(start, dt.date(2300, 1, 1))))
    zone = draw(_calendar_zones)
    return CalendarIntervalTrigger(
        years=amounts[0], months=amounts[1], weeks=amounts[2], days=amounts[3],
        hour=draw(st.integers(0, 23)), minute=draw(st.integers(0, 59)),
        second=draw(st.integers(0, 59)), start_date=start, end_date=end, timezone=zone,
        jitter=draw(_jitters),
    )  # fmt: skip


def triggers(
    capabilities: Collection[str] = ALL_CAPABILITIES, max_depth: int = 2
) -> st.SearchStrategy[BaseTrigger]:
    """Every built-in trigger with random parameters; And/Or nested up to ``max_depth``."""
    return _triggers(frozenset(capabilities), max_depth)


@functools.cache
def _triggers(capabilities: frozenset[str], max_depth: int = 2) -> st.SearchStrategy[BaseTrigger]:
    base = st.one_of(
        aware_datetimes(capabilities).map(DateTrigger),
        _interval_triggers(aware_datetimes(capabilities, 1971, 2200), zones(capabilities)),
        cron_triggers(capabilities),
        _calendar_triggers(),
    )
    if max_depth <= 0:
        return base
    nested = triggers(capabilities, max_depth - 1)
    members = st.lists(nested, min_size=1, max_size=2)
    combined = st.one_of(
        st.builds(AndTrigger, members, jitter=_jitters),
        st.builds(OrTrigger, members, jitter=_jitters),
    )
    return st.one_of(base, combined)


@functools.cache
def _scalars(capabilities: frozenset[str]) -> st.SearchStrategy[Any]:
    big = "big-ints" in capabilities
    options: list[st.SearchStrategy[Any]] = [
        st.none(),
        st.booleans(),
        st.integers() if big else st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan="non-finite-floats" in capabilities,
                  allow_infinity="non-finite-floats" in capabilities),
        st.text(),
    ]  # fmt: skip
    if "bytes" in capabilities:
        options.append(st.binary())
    if "decimal" in capabilities:
        options.append(st.decimals(allow_nan=True))
    if "uuid" in capabilities:
        options.append(st.uuids())
    if "temporal-values" in capabilities:
        options += [
            aware_datetimes(capabilities),
            st.dates(),
            st.timedeltas(),
            zones(capabilities),
            st.times(timezones=st.none() | zones(capabilities)),
        ]
        if "naive-datetimes" in capabilities:
            options += [st.datetimes(), st.times()]
    return st.one_of(options)


@functools.cache
def _hashables(capabilities: frozenset[str]) -> st.SearchStrategy[Any]:
    scalars = _scalars(capabilities).filter(_hashable_and_self_equal)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=4)


def _hashable_and_self_equal(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return bool(value == value)  # noqa: PLR0124 - nan keys can never be looked up again


def values(capabilities: Collection[str] = ALL_CAPABILITIES) -> st.SearchStrategy[Any]:
    """Argument values: scalars and nested lists, tuples, dicts and sets of them."""
    return _values(frozenset(capabilities))


@functools.cache
def _values(capabilities: frozenset[str]) -> st.SearchStrategy[Any]:
    keys = _hashables(capabilities) if "non-str-keys" in capabilities else st.text()

    def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        options = [
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(keys, inner, max_size=4),
        ]
        if "sets" in capabilities:
            hashables = _hashables(capabilities)
            options += [st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=4)]
        return st.one_of(options)

    return st.recursive(_scalars(capabilities), containers, max_leaves=6)


def job_states(
    capabilities: Collection[str] = ALL_CAPABILITIES,
    trigger: st.SearchStrategy[BaseTrigger] | None = None,
    next_run_times: st.SearchStrategy[dt.datetime | None] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Job states as ``Job.__getstate__()`` returns them, paused jobs and unicode names included."""
    capabilities = frozenset(capabilities)
    return st.fixed_dictionaries(
        {
            "version": st.just(1),
            "id": st.text(min_size=1, max_size=40),
            "func": st.just(EXAMPLE_JOB_REF),
            "trigger": trigger if trigger is not None else triggers(capabilities),
            "executor": st.sampled_from(["default", "processpool"]) | st.text(min_size=1),
            "args": st.lists(values(capabilities), max_size=3).map(tuple),
            "kwargs": st.dictionaries(st.text(max_size=12), values(capabilities), max_size=3),
            "name": st.text(min_size=1, max_size=40),
            "misfire_grace_time": st.none() | st.integers(1, 10**6),
            "coalesce": st.booleans(),
            "max_instances": st.integers(1, 1000),
            "next_run_time": (
                next_run_times if next_run_times is not None
                else _maybe(aware_datetimes(capabilities))
            ),
        }
    )  # fmt: skip
