"""pytz and zoneinfo zones through the store, for every serializer: zones come back as they were."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytz
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from jobshelf import MongoDBJobStore

from .helpers import assert_same_job, make_job

EASTERN = pytz.timezone("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_pytz_times_stay_pytz_with_their_dst_variant(
    store: MongoDBJobStore, scheduler: BackgroundScheduler
) -> None:
    summer = EASTERN.localize(dt.datetime(2030, 7, 1, 9, 0, 0, 123456))
    winter = EASTERN.localize(dt.datetime(2030, 1, 1, 9))
    job = make_job(
        scheduler, "pytz", trigger=DateTrigger(summer), next_run_time=summer, kwargs={"since": winter}
    )
    store.add_job(job)
    restored = store.lookup_job("pytz")
    assert_same_job(job, restored)
    assert restored is not None
    assert restored.next_run_time.tzinfo is summer.tzinfo  # pytz's own EDT variant object
    assert restored.next_run_time.tzname() == "EDT"
    assert restored.kwargs["since"].tzname() == "EST"
    assert restored.trigger.run_date.tzinfo is summer.tzinfo


def test_zoneinfo_and_fixed_offsets_keep_their_zone_and_fold(
    store: MongoDBJobStore, scheduler: BackgroundScheduler
) -> None:
    ambiguous = dt.datetime(2030, 10, 27, 2, 30, tzinfo=BERLIN, fold=1)  # the second 02:30
    named = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
    job = make_job(
        scheduler,
        "zones",
        trigger=IntervalTrigger(hours=1, start_date=ambiguous, timezone=BERLIN),
        next_run_time=ambiguous,
        args=(dt.datetime(2030, 1, 1, tzinfo=named),),
    )
    store.add_job(job)
    restored = store.lookup_job("zones")
    assert_same_job(job, restored)
    assert restored is not None
    assert restored.next_run_time.fold == 1
    assert restored.next_run_time.tzinfo is BERLIN
    assert restored.args[0].tzname() == "IST"
    due = store.get_due_jobs(ambiguous)
    assert [j.id for j in due] == ["zones"]
    assert due[0].next_run_time.utcoffset() == dt.timedelta(hours=1)  # CET, after the switch


def test_cron_in_a_pytz_zone_fires_at_the_same_times(
    store: MongoDBJobStore, scheduler: BackgroundScheduler
) -> None:
    trigger = CronTrigger(hour=2, minute=30, timezone=EASTERN)  # APScheduler converts to zoneinfo
    first = trigger.get_next_fire_time(None, EASTERN.localize(dt.datetime(2030, 3, 9)))
    job = make_job(scheduler, "cron", trigger=trigger, next_run_time=first)
    store.add_job(job)
    restored = store.lookup_job("cron")
    assert_same_job(job, restored)
    assert restored is not None
    now = first
    for _ in range(3):  # across the March DST switch, when 02:30 does not exist
        expected = trigger.get_next_fire_time(None, now)
        assert restored.trigger.get_next_fire_time(None, now) == expected
        now = expected + dt.timedelta(seconds=1)
