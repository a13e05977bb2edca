"""Known-hard job states: checked one by one before the random search, so a lossy serializer is
caught the same way on every run, whatever Hypothesis happens to draw."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
import zoneinfo
from collections.abc import Collection, Iterator
from typing import Any

from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .strategies import ALL_CAPABILITIES, EXAMPLE_JOB_REF

__all__ = ["hard_states"]

_BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _state(label: str, **changes: Any) -> dict[str, Any]:
    run_at = dt.datetime(2031, 3, 30, 1, 30, 15, 123456, tzinfo=_BERLIN)
    state = {
        "version": 1, "id": f"hard-{label}", "func": EXAMPLE_JOB_REF, "trigger": DateTrigger(run_at),
        "executor": "default", "args": (), "kwargs": {}, "name": label, "misfire_grace_time": 1,
        "coalesce": False, "max_instances": 1, "next_run_time": run_at,
    }  # fmt: skip
    state.update(changes)
    return state


def hard_states(capabilities: Collection[str] = ALL_CAPABILITIES) -> Iterator[dict[str, Any]]:
    """Job states that lossy serializers typically get wrong, narrowed to ``capabilities``."""
    caps = frozenset(capabilities)
    start = dt.datetime(2030, 1, 1, tzinfo=_BERLIN)
    yield _state("tuples", args=(1, (2, (3,)), [4, (5,)]), kwargs={"pair": (1, 2), "empty": ()})
    yield _state(
        "microseconds-and-fold",
        next_run_time=dt.datetime(2030, 10, 27, 2, 30, 0, 999999, tzinfo=_BERLIN, fold=1),
    )
    yield _state(
        "years",
        trigger=DateTrigger(dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc)),
        next_run_time=dt.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
    )
    yield _state("paused", next_run_time=None, misfire_grace_time=None, coalesce=True, max_instances=3)
    yield _state("unicode", id="h\u00e9-\u2603-\U0001f600", name="\u0000\n\u202e")
    yield _state(
        "fixed-offset",
        next_run_time=dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45), "NPT")),
    )
    yield _state(
        "cron-edge",
        trigger=CronTrigger(
            second="0-0/1",
            minute="*/7",
            hour="1-5/2",
            day="last",
            day_of_week="mon-fri",
            timezone=_BERLIN,
            jitter=3,
        ),
    )
    yield _state(
        "interval",
        trigger=IntervalTrigger(seconds=0.000001, start_date=start, end_date=start + dt.timedelta(days=1)),
    )
    yield _state(
        "calendar",
        trigger=CalendarIntervalTrigger(
            months=1, days=3, hour=2, minute=30, start_date=dt.date(2030, 1, 31), timezone=_BERLIN
        ),
    )
    yield _state(
        "combined",
        trigger=OrTrigger(
            [
                AndTrigger(
                    [IntervalTrigger(hours=2, start_date=start), CronTrigger(hour="*/2", timezone=_BERLIN)]
                ),
                DateTrigger(start),
            ],
            jitter=5,
        ),
    )
    yield _state("floats", kwargs={"x": 0.1, "neg": -0.0, "big": 1e308})
    if "pytz" in caps:
        import pytz

        eastern = pytz.timezone("US/Eastern")
        when = eastern.localize(dt.datetime(2030, 11, 3, 1, 30), is_dst=False)
        yield _state(
            "pytz",
            next_run_time=when,
            kwargs={"when": when},
            trigger=DateTrigger(pytz.timezone("Europe/London").localize(dt.datetime(2030, 7, 1))),
        )
    if "naive-datetimes" in caps:
        yield _state("naive", kwargs={"naive": dt.datetime(2030, 1, 1, 12), "clock": dt.time(1, 2, 3, 4)})
    if "big-ints" in caps:
        yield _state("big-ints", args=(2**64, -(2**63) - 1, 10**100))
    if "non-finite-floats" in caps:
        yield _state("non-finite", args=(math.inf, -math.inf, math.nan))
    if "bytes" in caps:
        yield _state("bytes", args=(b"\x00\xff", bytes(range(256))))
    if "sets" in caps:
        yield _state("sets", args=({1, 2}, frozenset({"a"}), set()))
    if "decimal" in caps:
        yield _state("decimal", args=(decimal.Decimal("1.10"), decimal.Decimal("-0")))
    if "uuid" in caps:
        yield _state("uuid", args=(uuid.UUID(int=1),))
    if "non-str-keys" in caps:
        yield _state("keys", args=({1: "a", (1, 2): "b", None: "c", 1.5: "d"},))
    if "temporal-values" in caps:
        yield _state("temporal", args=(dt.date(2030, 1, 1), dt.timedelta(days=-1, microseconds=1), _BERLIN))
