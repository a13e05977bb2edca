"""The job mix every contender encodes: the same jobs for everyone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytz
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
EASTERN = pytz.timezone("America/New_York")
START = dt.datetime(2030, 1, 1, 9, 30, 0, 250000, tzinfo=BERLIN)


def task(*args: Any, **kwargs: Any) -> None:
    """The importable callable of every benchmark job."""


def triggers() -> dict[str, Any]:
    return {
        "date": DateTrigger(START),
        "interval": IntervalTrigger(minutes=15, start_date=START, timezone=BERLIN),
        "cron-zoneinfo": CronTrigger(day_of_week="mon-fri", hour="9-17", minute="*/10", timezone=BERLIN),
        "cron-pytz": CronTrigger(
            hour=6, minute=30, timezone=EASTERN, start_date=EASTERN.localize(dt.datetime(2030, 1, 1))
        ),
        "calendarinterval": CalendarIntervalTrigger(
            months=1, hour=3, start_date=dt.date(2030, 1, 31), timezone=BERLIN
        ),
        "combined": OrTrigger([CronTrigger(hour=8, timezone=BERLIN), DateTrigger(START)]),
    }


SMALL_ARGS: tuple[tuple[Any, ...], dict[str, Any]] = ((42, "report"), {"retry": True})
LARGE_ARGS: tuple[tuple[Any, ...], dict[str, Any]] = (
    (list(range(200)), "x" * 500, {f"k{i}": i * 1.5 for i in range(50)}),
    {"recipients": [f"user{i}@example.com" for i in range(40)], "since": START, "limit": 1000},
)


def make_jobs(scheduler: BackgroundScheduler | None = None) -> dict[str, Job]:
    """One job per (trigger kind, argument size): 12 jobs, keyed ``kind/size``."""
    scheduler = scheduler or BackgroundScheduler(timezone=UTC)
    jobs = {}
    for kind, trigger in triggers().items():
        for size, (args, kwargs) in (("small", SMALL_ARGS), ("large", LARGE_ARGS)):
            job_id = f"{kind}/{size}"
            jobs[job_id] = Job(
                scheduler,
                id=job_id,
                func=task,
                trigger=trigger,
                executor="default",
                args=args,
                kwargs=kwargs,
                name=job_id,
                misfire_grace_time=30,
                coalesce=True,
                max_instances=1,
                next_run_time=START,
            )
    return jobs
