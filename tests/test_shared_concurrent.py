"""Shared mode: the process running a job and an application changing it, at the same time.

Each test runs a real BackgroundScheduler (the holder) and changes the job from a second store
instance on the same collection (another process, as far as the stores can tell) at the exact
moment that used to lose a write: between the holder's claim and its write-back, or between the
application's ``lookup_job`` and its ``update_job``. Either way the fire time must run once, the
application's change must stand, and the schedule must belong to whoever moved it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .helpers import UTC, RunLog, wait_for

RUNS = RunLog()
HOUR = dt.timedelta(hours=1)


def ran(name: str, label: str = "first") -> None:
    """The job: one run of ``name`` (``label`` is what an application changes)."""
    RUNS.record(name)
    RUNS.record(f"{name}:{label}")


class Hooked(MongoDBJobStore):
    """A store that runs ``between`` once, after a claim pass (``get_due_jobs``) or after the
    application's ``lookup_job``, before the write that follows: the moment another process acts."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.after_claim: Callable[[], None] | None = None
        self.after_lookup: Callable[[], None] | None = None

    def get_due_jobs(self, now: dt.datetime) -> list[Job]:
        jobs: list[Job] = super().get_due_jobs(now)
        hook, self.after_claim = self.after_claim, None
        if hook is not None and jobs:
            hook()
        return jobs

    def lookup_job(self, job_id: str) -> Job | None:
        job: Job | None = super().lookup_job(job_id)
        hook, self.after_lookup = self.after_lookup, None
        if hook is not None:
            hook()
        return job


@pytest.fixture
def schedulers(mongo_client: MongoClient[Any], database: str) -> Iterator[Callable[..., Any]]:
    """``make(paused)``: a scheduler on a shared ``Hooked`` store of its own, on one collection."""
    made: list[BackgroundScheduler] = []

    def make(*, paused: bool) -> tuple[BackgroundScheduler, Hooked]:
        store = Hooked(database=database, client=mongo_client, shared=True)
        scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
        made.append(scheduler)
        scheduler.start(paused=paused)
        return scheduler, store

    RUNS.clear()
    yield make
    for scheduler in made:
        scheduler.shutdown(wait=False)


def add(app: BackgroundScheduler, job_id: str, trigger: str = "interval", func: Any = ran) -> dt.datetime:
    """Add the job, due one second ago; return that fire time."""
    first = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    timing = {"hours": 1, "start_date": first} if trigger == "interval" else {"run_date": first}
    app.add_job(func, trigger, args=(job_id,), id=job_id, next_run_time=first, misfire_grace_time=None,
                **timing)  # fmt: skip
    return first


def stored(store: MongoDBJobStore, job_id: str) -> Job:
    job = store.lookup_job(job_id)
    assert job is not None
    return job


def advanced(store: MongoDBJobStore, job_id: str, first: dt.datetime) -> bool:
    """The holder wrote the job back: its stored next run time is past ``first``."""
    document = store.collection.find_one({"_id": job_id}, ["next_run_time"])
    return document is not None and (document.get("next_run_time") or 0) > first.timestamp()


def test_a_change_between_the_holders_claim_and_its_write_back_stands_and_the_fire_time_runs_once(
    schedulers: Any,
) -> None:
    app, app_store = schedulers(paused=True)
    first = add(app, "j")
    holder, holder_store = schedulers(paused=True)
    holder_store.after_claim = lambda: app.modify_job("j", kwargs={"label": "changed"})
    holder.resume()
    assert RUNS.wait_until(lambda counts: counts["j"] >= 1, timeout=10)
    assert wait_for(lambda: stored(app_store, "j").next_run_time == first + HOUR, timeout=10)
    job = stored(app_store, "j")
    assert job.kwargs == {"label": "changed"}  # the application's change stands
    assert RUNS.counts() == {"j": 1, "j:first": 1}  # run once, as claimed; due next in an hour


def skipped_write(caplog: pytest.LogCaptureFixture) -> Callable[[], bool]:
    """Whether the holder has said its write-back was skipped (another writer's schedule stands)."""
    return lambda: any("no longer holds its lease" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("change", ["pause", "reschedule"])
def test_a_schedule_change_between_the_holders_claim_and_its_write_back_stands(
    schedulers: Any, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, app_store = schedulers(paused=True)
    first = add(app, "j")
    later = first + dt.timedelta(days=3)
    holder, holder_store = schedulers(paused=True)
    if change == "pause":
        holder_store.after_claim = lambda: app.pause_job("j")
    else:
        holder_store.after_claim = lambda: app.modify_job("j", next_run_time=later)
    with caplog.at_level(logging.WARNING, logger="jobshelf"):
        holder.resume()
        assert RUNS.wait_until(lambda counts: counts["j"] >= 1, timeout=10)
        assert wait_for(skipped_write(caplog), timeout=10)
    # the application's schedule stands: the holder's write did not resume or move it
    assert stored(app_store, "j").next_run_time == (None if change == "pause" else later)
    assert RUNS.counts() == {"j": 1, "j:first": 1}


GATE = threading.Event()


def ran_slowly(name: str, label: str = "first") -> None:
    """The job, still running when the holder writes it back (until the test opens ``GATE``)."""
    ran(name, label)
    GATE.wait(10)


@pytest.mark.parametrize("running", [False, True], ids=["over-at-write-back", "running-at-write-back"])
def test_a_finished_date_job_changed_before_its_removal_runs_once_and_is_removed(
    schedulers: Any, running: bool
) -> None:
    app, app_store = schedulers(paused=True)
    GATE.clear()
    add(app, "d", trigger="date", func=ran_slowly if running else ran)
    holder, holder_store = schedulers(paused=True)
    holder_store.after_claim = lambda: app.modify_job("d", kwargs={"label": "changed"})
    holder.resume()
    assert RUNS.wait_until(lambda counts: counts["d"] >= 1, timeout=10)
    if running:  # finished: out of the schedule, marked for removal once its run is over
        finished = {"_id": "d", "next_run_time": None, "lease.remove": True}
        assert wait_for(lambda: app_store.collection.find_one(finished) is not None, timeout=10)
        GATE.set()
    assert wait_for(lambda: app_store.lookup_job("d") is None, timeout=10)  # its only fire time ran: gone
    assert RUNS.counts() == {"d": 1, "d:first": 1}


def test_a_change_read_before_the_holder_ran_the_job_keeps_the_schedule_it_set(schedulers: Any) -> None:
    app, app_store = schedulers(paused=True)
    first = add(app, "j")
    holder, _ = schedulers(paused=True)

    def holder_runs_it() -> None:  # after the application read the job, before it writes it back
        holder.resume()
        assert RUNS.wait_until(lambda counts: counts["j"] >= 1, timeout=10)
        assert wait_for(lambda: advanced(app_store, "j", first), timeout=10)

    app_store.after_lookup = holder_runs_it
    app.modify_job("j", kwargs={"label": "changed"})  # lookup_job, then update_job
    job = stored(app_store, "j")
    assert (job.next_run_time, job.kwargs) == (first + HOUR, {"label": "changed"})
    assert RUNS.counts() == {"j": 1, "j:first": 1}  # not run again: the holder's schedule stands


def test_a_reschedule_read_before_the_holder_ran_the_job_stands(schedulers: Any) -> None:
    app, app_store = schedulers(paused=True)
    first = add(app, "j")
    holder, _ = schedulers(paused=True)

    def holder_runs_it() -> None:
        holder.resume()
        assert RUNS.wait_until(lambda counts: counts["j"] >= 1, timeout=10)
        assert wait_for(lambda: advanced(app_store, "j", first), timeout=10)

    app_store.after_lookup = holder_runs_it
    app.pause_job("j")  # the application's own schedule change: written as it is
    assert stored(app_store, "j").next_run_time is None


def test_a_forged_lease_token_does_not_run_a_fire_time_twice(schedulers: Any) -> None:
    """Another program overwrites the claim's token between the claim and the write-back: the
    holder's write is refused, and the state it would have advanced is advanced all the same."""
    app, app_store = schedulers(paused=True)
    first = add(app, "j")
    holder, holder_store = schedulers(paused=True)
    jobs = holder_store.collection
    holder_store.after_claim = lambda: jobs.update_one({"_id": "j"}, {"$set": {"lease.token": 12345}})
    holder.resume()
    assert RUNS.wait_until(lambda counts: counts["j"] >= 1, timeout=10)
    assert wait_for(lambda: stored(app_store, "j").next_run_time == first + HOUR, timeout=10)
    assert RUNS.counts() == {"j": 1, "j:first": 1}


def test_a_change_to_a_job_quarantined_since_it_was_read_is_written(schedulers: Any) -> None:
    """Another process quarantined the job (its stored state became unreadable) between the
    application's read and its write: the change is written as it is, as without shared mode."""
    app, app_store = schedulers(paused=True)
    add(app, "j")
    _, other = schedulers(paused=True)

    def broken_and_quarantined() -> None:
        app_store.collection.update_one(
            {"_id": "j"}, {"$set": {"job_state": b"not a pickle", "job_state_rev": 7}}
        )
        assert other.lookup_job("j") is None  # read by another process: quarantined

    app_store.after_lookup = broken_and_quarantined
    app.modify_job("j", kwargs={"label": "changed"})
    job = stored(app_store, "j")
    assert job.kwargs == {"label": "changed"} and app_store.get_quarantined_jobs() == []
