"""Admit only triggers that compute (issue 14, part 5).

A decoded job state is admitted only when its trigger holds values its own constructor would
accept and the fire time after the state's next run time can be computed: without raising, inside
the calendar, moving forward, within bounded work. Otherwise the job is quarantined with the
reason. Forged documents are written the way tests/test_hostile.py writes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import pickle
import threading
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobshelf import MemoryJobStore, SerializationError, register_trigger, unregister_trigger
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.testing import triggers as builtin_triggers
from jobshelf.testing.strategies import aware_datetimes

from .helpers import UTC, AnyStore, RunLog, document_ids, insert_document, loop_is_alive, make_job

SERIALIZERS = ["pickle", "msgpack"]
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
#: Far enough ahead that no test's job is due, near enough that every interval below is small.
SOON = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(days=30)
END = dt.datetime(9999, 12, 30, 12, tzinfo=UTC)
LAST_HOUR = dt.datetime(9999, 12, 30, 23, 30, tzinfo=UTC)


def interval(**changes: Any) -> IntervalTrigger:
    """An IntervalTrigger rebuilt without its constructor, as decoding does."""
    trigger = IntervalTrigger(minutes=5, start_date=SOON, timezone=UTC)
    state = trigger.__getstate__()
    state.update(changes)
    trigger.__setstate__(state)
    return trigger


def calendar(**changes: Any) -> CalendarIntervalTrigger:
    trigger = CalendarIntervalTrigger(days=1, hour=9, start_date=SOON.date(), timezone=UTC)
    state = trigger.__getstate__()
    state.update(changes)
    trigger.__setstate__(state)
    return trigger


def cron(**fields: Any) -> CronTrigger:
    return CronTrigger(**{"timezone": BERLIN, **fields})


def date(run_date: Any) -> DateTrigger:
    """A DateTrigger holding any value, as decoding can leave it."""
    trigger = DateTrigger.__new__(DateTrigger)
    trigger.__setstate__({"version": 1, "run_date": run_date})
    return trigger


def cron_with(change: Callable[[CronTrigger], Any], **fields: Any) -> CronTrigger:
    """A CronTrigger whose field objects were changed after construction (what a pickle can hold)."""
    trigger = cron(**fields)
    change(trigger)
    return trigger


def nested(depth: int) -> BaseTrigger:
    trigger: BaseTrigger = interval()
    for _ in range(depth):
        trigger = OrTrigger([trigger])
    return trigger


class Countdown(BaseTrigger):
    """A custom trigger: fires ``step`` seconds after the previous fire time."""

    __slots__ = ("step",)

    def __init__(self, step: float) -> None:
        self.step = step

    def __getstate__(self) -> dict[str, Any]:  # what AndTrigger/OrTrigger pickle for their members
        return {"step": self.step}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.step = state["step"]

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        return (previous or now) + dt.timedelta(seconds=self.step)


class Naive(BaseTrigger):
    """A custom trigger that computes naive datetimes (APScheduler would compare them and raise)."""

    __slots__ = ()

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        return dt.datetime(2100, 1, 1)


@pytest.fixture(autouse=True)
def custom_triggers() -> Any:
    register_trigger(Countdown, "test-countdown", lambda t: [t.step], lambda p: Countdown(p[0]))
    register_trigger(Naive, "test-naive", lambda t: [], lambda p: Naive())
    yield
    unregister_trigger("test-countdown")
    unregister_trigger("test-naive")


def forge(store: AnyStore, scheduler: BackgroundScheduler, job_id: str, trigger: Any,
          next_run_time: dt.datetime | None) -> None:  # fmt: skip
    """Write a job state in the store's own format, behind its back, as an attacker would."""
    state = make_job(scheduler, job_id, next_run_time=SOON).__getstate__()
    state.update(trigger=trigger, next_run_time=next_run_time)
    data = store.serializer.dumps(state)
    index = next_run_time.timestamp() if next_run_time is not None else None
    document = {"_id": job_id, "next_run_time": index, "job_state": data, FORMAT_FIELD: store.format}
    insert_document(store, document)


def quarantine_message(store: AnyStore, job_id: str) -> str:
    (quarantined,) = [q for q in store.get_quarantined_jobs() if q.id == job_id]
    return quarantined.message


# ----------------------------------------------------------------------------- the two examples


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_an_interval_of_3_000_000_days_is_quarantined_before_it_runs(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    now = dt.datetime.now(UTC)
    store.add_job(make_job(scheduler, "good", next_run_time=now))
    forge(store, scheduler, "huge", interval(interval=dt.timedelta(days=3_000_000), start_date=now), now)
    assert [job.id for job in store.get_due_jobs(now)] == ["good"]
    message = quarantine_message(store, "huge")
    assert message.startswith("job 'huge' has a schedule APScheduler cannot compute: trigger ")
    assert "year 10240 is out of range" in message
    assert "remove the job and add it again" in message
    assert document_ids(store) == ["good", "huge"]  # kept, never deleted


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_an_interval_of_zero_is_quarantined(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    now = dt.datetime.now(UTC)
    forge(store, scheduler, "zero", interval(interval=dt.timedelta(0)), now)
    assert store.get_due_jobs(now) == []
    assert "trigger.interval is 0:00:00: an interval must be above zero" in quarantine_message(store, "zero")


# ----------------------------------------------------------------------------- the siblings

Maker = Callable[[], Any]
#: name -> (trigger, next run time, what the quarantine message says), one test each.
REFUSED: dict[str, tuple[Maker, dt.datetime | None, str]] = {}
#: name -> (trigger, next run time): admitted, one test each.
ADMITTED: dict[str, tuple[Maker, dt.datetime | None]] = {}


def refused(name: str, make: Maker, next_run_time: dt.datetime | None, says: str) -> None:
    REFUSED[name] = (make, next_run_time, says)


def admitted(name: str, make: Maker, next_run_time: dt.datetime | None) -> None:
    ADMITTED[name] = (make, next_run_time)


DAY, NOW = dt.timedelta(days=1), dt.datetime.now(UTC)
MIN, MAX = dt.datetime.min.replace(tzinfo=UTC), dt.datetime.max.replace(tzinfo=UTC)
NO_MATCH = "finds no fire time after"
# IntervalTrigger
refused("interval negative", lambda: interval(interval=-DAY), SOON, "trigger.interval is -1 day")
refused("interval beyond the calendar", lambda: interval(interval=dt.timedelta(days=999_999_999)), SOON,
        "trigger cannot compute its next fire time after")  # fmt: skip
refused("interval of a year near the end", lambda: interval(interval=365 * DAY), END,
        "trigger cannot compute its next fire time after")  # fmt: skip
refused("interval without a zone", lambda: interval(timezone=None), SOON, "trigger.timezone is NoneType")
refused("interval start_date naive", lambda: interval(start_date=dt.datetime(2030, 1, 1)), SOON,
        "trigger.start_date is a naive datetime")  # fmt: skip
refused("interval start_date at datetime.min", lambda: interval(start_date=MIN), SOON,
        "trigger.start_date is 0001-01-01")  # fmt: skip
refused("interval end_date at datetime.max", lambda: interval(end_date=MAX), SOON, "end_date is 9999-12-31")
refused("interval start_date a string", lambda: interval(start_date="2030-01-01"), SOON,
        "trigger.start_date is a str")  # fmt: skip
refused("jitter nan", lambda: interval(jitter=math.nan), SOON, "trigger.jitter is nan")
refused("jitter inf", lambda: interval(jitter=math.inf), SOON, "trigger.jitter is inf")
refused("jitter negative", lambda: interval(jitter=-30), SOON, "trigger.jitter is -30")
refused("jitter huge", lambda: interval(jitter=1e300), SOON, "trigger.jitter is 1e+300")
refused("jitter past the calendar", lambda: interval(jitter=3e11), SOON, "with its jitter of up to 3e+11 s")
refused("jitter a string", lambda: interval(jitter="5"), SOON, "trigger.jitter is a str")
# DateTrigger
refused("run_date naive", lambda: date(dt.datetime(2030, 1, 1)), SOON, "trigger.run_date is a naive datetime")
refused("run_date an int", lambda: date(5), SOON, "trigger.run_date is a int")
refused("run_date at datetime.max", lambda: DateTrigger(MAX), SOON, "trigger.run_date is 9999-12-31")
# CronTrigger
refused("cron 30 February", lambda: cron(month=2, day=30), SOON, NO_MATCH)
refused("cron week 53 in June", lambda: cron(week=53, month=6), SOON, NO_MATCH)
refused("cron jitter nan", lambda: cron(hour=1, jitter=math.nan), SOON, "trigger.jitter is nan")
refused("cron start_date at datetime.min", lambda: cron(hour=1, start_date=MIN), SOON,
        "trigger.start_date is 0001-01-01")  # fmt: skip
refused("cron firing past the calendar", lambda: cron(hour="*"), LAST_HOUR,
        "trigger's next fire time is 9999-12-31T01:00:00+01:00")  # fmt: skip
# CalendarIntervalTrigger
refused("calendar of no days", lambda: calendar(interval=[0, 0, 0, 0]), SOON, "needs at least 1 day")
refused("calendar going backwards", lambda: calendar(interval=[0, -1, 0, 0]), SOON, "trigger.months is -1")
refused("calendar of a string", lambda: calendar(interval=[0, 0, 0, "1"]), SOON, "trigger.days is '1'")
refused("calendar ending before it starts", lambda: calendar(end_date=SOON.date() - DAY), SOON,
        "trigger.end_date is")  # fmt: skip
refused("calendar past the year 9999", lambda: calendar(interval=[0, 1, 0, 0]),
        dt.datetime(9999, 12, 15, 9, tzinfo=UTC), "finds no fire time after 9999-12-15")  # fmt: skip
# And / Or
refused("and of intervals that never agree",
        lambda: AndTrigger([interval(), interval(interval=DAY / 7)]), SOON, NO_MATCH)  # fmt: skip
# APScheduler 3.11's AndTrigger loops forever once its members disagree after a fire time
refused("and of crons that disagree after a run", lambda: AndTrigger([cron(hour="*/2"), cron(minute=0)]),
        dt.datetime(SOON.year, SOON.month, SOON.day, 6, 12, tzinfo=BERLIN), NO_MATCH)  # fmt: skip
refused("and with a jittered member", lambda: AndTrigger([cron(hour=9, jitter=5), calendar()]), SOON,
        "trigger.triggers[0].jitter is 5 inside an AndTrigger")  # fmt: skip
refused("and without members", lambda: AndTrigger([]), SOON, "trigger.triggers is empty")
refused("or holding an interval of zero", lambda: OrTrigger([cron(hour=1), interval(interval=0 * DAY)]), SOON,
        "trigger.triggers[1].interval is 0:00:00")  # fmt: skip
refused("or nested 17 deep", lambda: nested(17), SOON, "nests And/Or triggers more than 16 deep")
# resuming computes from now under the scheduler's lock: a paused job must compute too
refused("paused and of intervals", lambda: AndTrigger([interval(), interval(start_date=SOON + DAY / 86_400)]),
        None,
        "finds no fire time from")  # fmt: skip
# the state's next run time
refused("next run time in year 1", interval, dt.datetime(1, 1, 1, 12, tzinfo=UTC),
        "next_run_time is 0001-01-01T12:00:00+00:00, outside the dates")  # fmt: skip
refused("next run time at datetime.max", lambda: DateTrigger(SOON), MAX,
        "next_run_time is 9999-12-31T23:59:59.999999+00:00, outside")  # fmt: skip
# custom registered triggers
refused("custom trigger that does not move", lambda: Countdown(0), SOON, "does not move forward")
refused("custom trigger going backwards", lambda: Countdown(-1), SOON, "does not move forward")
refused("custom trigger overflowing", lambda: Countdown(1e12), SOON, "OverflowError")
refused("custom trigger computing naive times", Naive, SOON, "is a naive datetime")

admitted("interval", lambda: interval(jitter=30), SOON)
admitted("interval that has ended", lambda: interval(end_date=SOON - DAY), SOON)
# IntervalTrigger's constructor accepts an end before the start: it never fires again, harmlessly
admitted("interval ending before it starts", lambda: interval(end_date=SOON - DAY, start_date=SOON), None)
admitted("interval, a day of runs missed", lambda: interval(interval=dt.timedelta(seconds=10)), NOW - DAY)
admitted("date in year 9999", lambda: DateTrigger(END), END)
admitted("cron", lambda: cron(hour="*/2", minute=5, jitter=10), SOON)
admitted("cron on 29 February, Mondays", lambda: cron(month=2, day=29, day_of_week="mon"), SOON)
admitted("cron, an hour of seconds missed", lambda: cron(second="*"), NOW - DAY / 24)
# the night clocks fall back: 02:00+01:00 is after 02:30+02:00, though its wall time is earlier
LAST_OCTOBER_DAY = dt.date(SOON.year + 1, 10, 31)
FALL_BACK = dt.datetime.combine(
    LAST_OCTOBER_DAY - dt.timedelta(days=(LAST_OCTOBER_DAY.weekday() + 1) % 7), dt.time(2, 30), BERLIN
)  # the last Sunday of October, 02:30 summer time
admitted("cron as clocks fall back", lambda: cron(minute="*/30"), FALL_BACK)
admitted("cron at the repeated hour", lambda: cron(hour="*/2", minute=30), FALL_BACK)
admitted("calendar", lambda: calendar(interval=[0, 1, 0, 3]), SOON)
admitted("and of a cron and a calendar that agree",
         lambda: AndTrigger([cron(hour=9, timezone=UTC), calendar()], jitter=5),
         SOON.replace(hour=9, minute=0, second=0))  # fmt: skip
admitted("or of everything", lambda: OrTrigger([interval(), cron(hour=3, jitter=5), DateTrigger(SOON)]), SOON)
admitted("or without members", lambda: OrTrigger([]), SOON)
admitted("paused cron", lambda: cron(hour=1), None)
admitted("custom trigger", lambda: Countdown(5), SOON)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_trigger_that_cannot_compute_is_quarantined(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, case: str
) -> None:
    make_trigger, next_run_time, reason = REFUSED[case]
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", next_run_time=SOON))
    forge(store, scheduler, "bad", make_trigger(), next_run_time)
    assert store.lookup_job("bad") is None
    assert [job.id for job in store.get_all_jobs()] == ["good"]
    message = quarantine_message(store, "bad")
    assert message.startswith("job 'bad' has a schedule APScheduler cannot compute: "), message
    assert reason in message, message
    assert message.endswith("remove the job and add it again with a trigger that can compute its fire times")
    assert document_ids(store) == ["bad", "good"]


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(ADMITTED))
def test_a_trigger_that_computes_is_admitted(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, case: str
) -> None:
    make_trigger, next_run_time = ADMITTED[case]
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    forge(store, scheduler, "fine", make_trigger(), next_run_time)
    job = store.lookup_job("fine")
    assert store.get_quarantined_jobs() == []
    assert job is not None and job.next_run_time == next_run_time


def test_the_repeated_hour_is_two_next_run_times(make_store: Any, scheduler: BackgroundScheduler) -> None:
    """02:30 before and after clocks fall back are equal datetimes, with different next fire times."""
    store = make_store(serializer="msgpack")
    store.start(scheduler, "default")
    forge(store, scheduler, "first", cron(minute="*/30"), FALL_BACK)
    forge(store, scheduler, "second", cron(minute="*/30"), FALL_BACK.replace(fold=1))
    assert FALL_BACK.replace(fold=1) == FALL_BACK
    assert store.lookup_job("first") is not None
    assert store.lookup_job("second") is not None
    assert store.get_quarantined_jobs() == []


#: Cron fields whose objects were changed after construction: only a pickle can carry them.
FORGED_FIELDS: dict[str, Callable[[CronTrigger], None]] = {
    "hour beyond 23": lambda t: setattr(t.fields[5].expressions[0], "first", 30),
    "a float hour": lambda t: setattr(t.fields[5].expressions[0], "first", 1.0),
    "a step of zero": lambda t: setattr(t.fields[5].expressions[0], "step", 0),
    "a method shadowed": lambda t: setattr(t.fields[5], "get_next_value", len),
    "fields out of order": lambda t: t.fields.reverse(),
    "a field missing": lambda t: t.fields.pop(),
    "an expression that is not one": lambda t: t.fields[5].expressions.append(5),
}


@pytest.mark.parametrize("case", list(FORGED_FIELDS))
def test_pickled_cron_fields_must_be_what_the_constructor_builds(
    make_store: Any, scheduler: BackgroundScheduler, case: str
) -> None:
    store = make_store(serializer="pickle")
    store.start(scheduler, "default")
    forge(store, scheduler, "bad", cron_with(FORGED_FIELDS[case], hour=1), SOON)
    forge(store, scheduler, "fine", cron(hour=1), SOON)
    assert store.lookup_job("bad") is None
    assert store.lookup_job("fine") is not None
    assert "trigger.fields" in quarantine_message(store, "bad")


def test_a_zone_that_gives_no_offset_is_quarantined(make_store: Any, scheduler: BackgroundScheduler) -> None:
    """``datetime.tzinfo`` itself is a zone a pickle can hold (the restricted unpickler admits it)."""
    store = make_store(serializer="pickle")
    store.start(scheduler, "default")
    bare = dt.tzinfo()
    forged = {
        "zone": cron_with(lambda t: setattr(t, "timezone", bare), hour=1),
        "run-date": date(dt.datetime(2030, 1, 1, tzinfo=bare)),
    }
    for job_id, trigger in forged.items():  # pickled by hand: the pickle serializer would not write them
        state = make_job(scheduler, job_id, next_run_time=SOON).__getstate__()
        state["trigger"] = trigger
        document = {"_id": job_id, "next_run_time": SOON.timestamp(), "job_state": pickle.dumps(state)}
        insert_document(store, {**document, FORMAT_FIELD: "pickle"})
    assert store.lookup_job("zone") is None and store.lookup_job("run-date") is None
    assert "NotImplementedError" in quarantine_message(store, "zone")
    assert "trigger.run_date cannot be placed in time (NotImplementedError" in quarantine_message(
        store, "run-date"
    )


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    "case", ["interval negative", "cron 30 February", "and of intervals that never agree", "jitter nan"]
)
def test_a_trigger_that_cannot_compute_is_not_written(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, case: str
) -> None:
    make_trigger, next_run_time, reason = REFUSED[case]
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    refusal = "job 'bad' has a schedule APScheduler cannot compute"
    with pytest.raises(SerializationError, match=refusal) as raised:
        store.add_job(make_job(scheduler, "bad", trigger=make_trigger(), next_run_time=next_run_time))
    assert reason in str(raised.value)
    assert "nothing was written" in str(raised.value)
    assert document_ids(store) == []
    store.add_job(make_job(scheduler, "bad", next_run_time=SOON))
    with pytest.raises(SerializationError, match="nothing was written"):
        store.update_job(make_job(scheduler, "bad", trigger=make_trigger(), next_run_time=next_run_time))
    job = store.lookup_job("bad")
    assert job is not None and isinstance(job.trigger, DateTrigger)


# ----------------------------------------------------------------------------- a running scheduler

RUNS = RunLog()


def beat(name: str) -> None:
    RUNS.record(name)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_scheduler_keeps_its_heartbeat_beside_poisoned_jobs(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    RUNS.clear()
    store = make_store(serializer=serializer)
    now = dt.datetime.now(UTC)
    poisoned = {
        "zero": (interval(interval=dt.timedelta(0), start_date=now), now),
        "huge": (interval(interval=dt.timedelta(days=3_000_000), start_date=now), now),
        "year-9999": (interval(interval=dt.timedelta(days=1)), END),
        "feb-30": (cron(month=2, day=30), now),
    }
    for job_id, (trigger, next_run_time) in poisoned.items():
        forge(store, scheduler, job_id, trigger, next_run_time)
    lateness: list[float] = []

    def listen(event: Any) -> None:
        if event.job_id == "heartbeat":
            late = (dt.datetime.now(UTC) - event.scheduled_run_time).total_seconds()
            lateness.append(late if event.code == EVENT_JOB_EXECUTED else math.inf)

    running = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    running.add_listener(listen, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
    running.start()
    try:
        # every fire time runs on its own (no coalescing, no misfire limit): a stuck loop shows as lateness
        running.add_job(beat, IntervalTrigger(seconds=0.25), args=["heartbeat"], id="heartbeat",
                        next_run_time=now, coalesce=False, misfire_grace_time=None)  # fmt: skip
        assert RUNS.wait_until(lambda counts: counts["heartbeat"] >= 8, timeout=30), RUNS.counts()
        assert loop_is_alive(running)
        deadline = time.monotonic() + 30
        while not {"zero", "huge", "feb-30"} <= {q.id for q in store.get_quarantined_jobs()}:
            assert time.monotonic() < deadline, [q.id for q in store.get_quarantined_jobs()]
            seen = RUNS["heartbeat"]
            assert RUNS.wait_until(lambda counts, seen=seen: counts["heartbeat"] > seen, timeout=5)
        beats = RUNS["heartbeat"]
        assert RUNS.wait_until(lambda counts: counts["heartbeat"] >= beats + 4, timeout=30)
    finally:
        running.shutdown()
    assert max(lateness) < 2.0, lateness  # on time: no loop pass stuck on a poisoned job
    assert store.lookup_job("year-9999") is None
    assert {q.id for q in store.get_quarantined_jobs()} == {"zero", "huge", "feb-30", "year-9999"}
    assert document_ids(store) == sorted(["heartbeat", *poisoned])


# ----------------------------------------------------------------------------- the property

_tiny = dt.timedelta(microseconds=1)
extreme_intervals = st.one_of(
    st.timedeltas(min_value=-dt.timedelta(days=10), max_value=dt.timedelta(days=10)),
    st.sampled_from([dt.timedelta(0), _tiny, -_tiny, dt.timedelta(days=3_000_000), dt.timedelta.max]),
)
extreme_jitters = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20),
    st.sampled_from([0, 1, 3e11, 1e300]),
)  # fmt: skip
extreme_moments = st.one_of(
    aware_datetimes(),
    st.sampled_from([
        dt.datetime.min.replace(tzinfo=UTC), dt.datetime.max.replace(tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(-dt.timedelta(hours=5))),
        dt.datetime(1, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ]),
)  # fmt: skip
near_now = st.integers(-86_400 * 3, 86_400 * 3).map(
    lambda seconds: dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=seconds)
)


@st.composite
def extreme_triggers(draw: st.DrawFn) -> BaseTrigger:
    """Built-in triggers with any values their state can hold, rebuilt without constructors."""
    kind = draw(st.sampled_from(["interval", "calendar", "cron", "date", "and", "or", "custom"]))
    if kind == "interval":
        return interval(
            interval=draw(extreme_intervals), jitter=draw(extreme_jitters), start_date=draw(extreme_moments),
            end_date=draw(st.none() | extreme_moments),
        )  # fmt: skip
    if kind == "calendar":
        amount = st.integers(-3, 10_000) | st.sampled_from([0, 1, 400])
        amounts = draw(st.lists(amount, min_size=4, max_size=4))
        end = draw(st.none() | st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)))
        return calendar(interval=amounts, jitter=draw(extreme_jitters), end_date=end)
    if kind == "cron":
        return cron_with(lambda t: setattr(t, "jitter", draw(extreme_jitters)),
                         month=draw(st.integers(1, 12)), day=draw(st.integers(1, 31)))  # fmt: skip
    if kind == "date":
        return DateTrigger(draw(extreme_moments))
    if kind == "custom":
        return Countdown(draw(st.floats(allow_nan=False) | st.integers(-5, 5)))
    members = draw(st.lists(builtin_triggers(max_depth=0) | extreme_triggers(), max_size=3))
    return (AndTrigger if kind == "and" else OrTrigger)(members, jitter=draw(st.none() | st.integers(0, 60)))


def finishes(work: Callable[[threading.Event], Any], seconds: float) -> tuple[bool, Any]:
    """Run ``work(stop)`` on a thread; whether it finished within ``seconds``, and its result or
    error. ``stop`` is set when this gives up waiting: a computation still going stops at its next
    step instead of spinning (and holding the GIL) through the rest of the suite."""
    outcome: list[Any] = []
    stop = threading.Event()

    def run() -> None:
        try:
            outcome.append(work(stop))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    stop.set()
    return (not thread.is_alive(), outcome[0] if outcome else None)


def run_times_and_next(
    trigger: BaseTrigger, next_run_time: dt.datetime, now: dt.datetime, stop: threading.Event
) -> Any:
    """What APScheduler's loop computes when the job is due: every run time up to now, then the next."""
    now = max(now, next_run_time)
    run_times: list[dt.datetime] = []
    current: dt.datetime | None = next_run_time
    while current is not None and current <= now:
        if stop.is_set():
            raise TimeoutError(f"gave up after {len(run_times)} run times")
        run_times.append(current)
        current = trigger.get_next_fire_time(current, now)
    if run_times:
        current = trigger.get_next_fire_time(run_times[-1], now)
    return current


@settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(
    serializer=st.sampled_from(SERIALIZERS),
    trigger=builtin_triggers() | extreme_triggers(),
    next_run_time=st.none() | near_now | extreme_moments,
)
def test_every_trigger_is_refused_or_computes(serializer: str, trigger: BaseTrigger,
                                              next_run_time: dt.datetime | None) -> None:  # fmt: skip
    scheduler = BackgroundScheduler(timezone=UTC)
    store = MemoryJobStore(serializer=serializer)
    store.start(scheduler, "default")
    try:
        forge(store, scheduler, "j", trigger, next_run_time)
    except Exception:  # the format cannot even hold it: nothing to admit
        event("not encodable")
        return
    job = store.lookup_job("j")
    if job is None:
        message = quarantine_message(store, "j")  # refused at admission (quarantined, not deleted)
        _, refusal, reason = message.partition("has a schedule APScheduler cannot compute: ")
        event(f"refused: {reason.split(' ')[0]}" if refusal else "undecodable")
        return
    event("admitted")
    now = dt.datetime.now(UTC)
    if next_run_time is None:
        done, result = finishes(lambda _: job.trigger.get_next_fire_time(None, now), 10)
        assert done, "resuming the admitted paused job would not finish"
        assert not isinstance(result, BaseException), repr(result)
        return
    # what APScheduler's loop is handed when the job is due: caught up, if it missed too many
    handed = [due for due in store.get_due_jobs(now) if due.id == "j"] if next_run_time <= now else []
    if handed:
        job = handed[0]
    elif next_run_time <= now:  # caught up to a time ahead: the loop computes from there, then
        later = store.lookup_job("j")
        if later is None:  # refused once due (no fire time to catch up to): never computed
            event("quarantined when due")
            return
        job = later
    start = job.next_run_time if job.next_run_time is not None else next_run_time
    done, result = finishes(lambda stop: run_times_and_next(job.trigger, start, now, stop), 10)
    assert done, "APScheduler's computation for the admitted job would not finish"
    assert not isinstance(result, BaseException), repr(result)
    assert result is None or (result.utcoffset() is not None and result > start)


#: Due jobs whose missed fire times are too many to enumerate: caught up, not refused.
CATCH_UP: dict[str, Maker] = {
    "a 1-second interval from 1970": lambda: interval(
        interval=dt.timedelta(seconds=1), start_date=dt.datetime(1970, 1, 1, tzinfo=UTC)
    ),
    "a cron every second from 1970": lambda: cron(second="*"),
}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(CATCH_UP))
def test_a_job_with_too_many_missed_fire_times_catches_up_instead_of_flooding(
    make_store: Any,
    scheduler: BackgroundScheduler,
    serializer: str,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    trigger = CATCH_UP[case]()
    forge(store, scheduler, "behind", trigger, dt.datetime(1970, 1, 1, tzinfo=UTC))
    now = dt.datetime.now(UTC)
    with caplog.at_level(logging.WARNING):
        [job] = store.get_due_jobs(now)
    assert store.get_quarantined_jobs() == []
    # the first fire time of its trigger at or after now less the job's grace time: APScheduler
    # enumerates one or two run times from there, not 1.8e9
    grace = dt.timedelta(seconds=job.misfire_grace_time or 0)
    assert job.next_run_time == trigger.get_next_fire_time(None, now - grace)
    assert now - grace <= job.next_run_time <= now
    assert any('Job "behind" missed too many fire times' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_jittered_job_caught_up_to_a_time_ahead_runs_at_that_time(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    """With jitter, the fire time a job catches up to can lie ahead of now: it is stored as caught
    up, so the pass at that time runs it (instead of catching up again, to a new time ahead)."""
    store = make_store(serializer=serializer)
    store.start(scheduler, "default")
    trigger = interval(interval=dt.timedelta(seconds=1), start_date=dt.datetime(1970, 1, 1, tzinfo=UTC),
                       jitter=3600)  # fmt: skip
    forge(store, scheduler, "behind", trigger, dt.datetime(1970, 1, 1, tzinfo=UTC))
    now = dt.datetime.now(UTC)
    due = store.get_due_jobs(now)
    job = due[0] if due else store.lookup_job("behind")
    assert job is not None and now - dt.timedelta(seconds=2) <= job.next_run_time <= now + dt.timedelta(
        hours=2
    )
    resume = job.next_run_time
    if not due:  # ahead (almost always, with an hour of jitter): due when that time comes
        assert store.get_next_run_time() == resume
        assert [(j.id, j.next_run_time) for j in store.get_due_jobs(resume)] == [("behind", resume)]
