"""The scheduler's loop known by construction (issue 15, part 1).

Each reproduction from the issue: a store subclass wrapping ``get_due_jobs``, a loop pass that
raises under ``AsyncIOScheduler``, the application's own writes during an outage, and the
scheduler's last pass after ``shutdown()``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from jobshelf import MemoryJobStore, MongoDBJobStore

from .helpers import UTC, RunLog, loop_is_alive, make_job
from .test_faults import RestartableServer, restartable  # noqa: F401 - the fixture

RUNS = RunLog()


def count_run(name: str) -> None:
    RUNS.record(name)


class MeteredStore(MongoDBJobStore):
    """What applications do: wrap ``get_due_jobs`` for metrics."""

    passes = 0

    def get_due_jobs(self, now: dt.datetime) -> list[Any]:
        MeteredStore.passes += 1
        jobs: list[Any] = super().get_due_jobs(now)
        return jobs


def test_a_subclass_wrapping_get_due_jobs_still_keeps_errors_out_of_the_loop(
    mongo_client: MongoClient[Any], database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A write the server refuses inside the loop is logged, not raised, though the store's
    ``get_due_jobs`` is called from a subclass's frame (stack inspection missed this)."""
    RUNS.clear()
    store = MeteredStore(database=database, client=mongo_client)
    store.collection.create_index("next_run_time", unique=True, name="unique_next_run_time")
    start = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.start()
    try:
        with caplog.at_level(logging.ERROR):
            scheduler.add_job(
                count_run, IntervalTrigger(seconds=1, start_date=start), args=["ticker"], id="ticker"
            )
            scheduler.add_job(count_run, "date", run_date=start + dt.timedelta(seconds=1), args=["blocker"],
                              id="blocker")  # fmt: skip
            assert RUNS.wait_until(lambda runs: runs["blocker"] == 1 and runs["ticker"] >= 3, 20), (
                RUNS.counts()
            )
        assert loop_is_alive(scheduler)
    finally:
        scheduler.shutdown()
    assert MeteredStore.passes > 0
    messages = [record.getMessage() for record in caplog.records]
    assert any('The update of job "ticker" could not be written (DuplicateKeyError' in m for m in messages)


class FlakyTrigger(BaseTrigger):  # type: ignore[misc]
    """A buggy custom trigger: once its job has run, it fails to compute the next fire time, in
    the scheduler's loop, after the jobshelf store handed out its due jobs."""

    armed = False

    def get_next_fire_time(self, previous_fire_time: Any, now: dt.datetime) -> dt.datetime | None:
        if previous_fire_time is None:
            return now
        if FlakyTrigger.armed:
            FlakyTrigger.armed = False
            raise RuntimeError("this trigger is broken")
        return previous_fire_time + dt.timedelta(hours=1)  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        pass


def arm_the_trigger() -> None:
    """The job: run by DebugExecutor inside the loop pass, between submission and the trigger's
    next computation."""
    FlakyTrigger.armed = True


def test_a_loop_pass_that_raises_does_not_leave_the_loop_context_set() -> None:
    """AsyncIOScheduler runs its loop on the application's thread: right after a pass that raised
    (before any other pass), the application's own ``remove_job`` of a missing job still raises
    ``JobLookupError``, and so does the store's ``update_job``."""
    store = MemoryJobStore()
    outcomes: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        failed = asyncio.Event()
        scheduler = AsyncIOScheduler(
            timezone=UTC, jobstores={"default": store}, executors={"default": DebugExecutor()}
        )

        def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # runs on the loop's thread just after the failed pass: the application's next call
            for call in (lambda: scheduler.remove_job("no-such-job"),
                         lambda: store.update_job(make_job(scheduler, "also-missing"))):  # fmt: skip
                try:
                    call()
                    outcomes.append("returned")
                except JobLookupError:
                    outcomes.append("JobLookupError")
            failed.set()

        loop.set_exception_handler(on_error)
        scheduler.start()
        try:
            scheduler.add_job(arm_the_trigger, FlakyTrigger(), id="flaky")
            await asyncio.wait_for(failed.wait(), 10)  # the pass raised between get_due_jobs and the rest
        finally:
            scheduler.shutdown(wait=False)

    asyncio.run(main())
    assert len(outcomes) >= 2 and set(outcomes) == {"JobLookupError"}, outcomes


def test_the_applications_writes_raise_during_an_outage_and_nothing_is_kept(
    restartable: RestartableServer,  # noqa: F811
) -> None:
    client: MongoClient[Any] = MongoClient(restartable.uri, serverSelectionTimeoutMS=300)
    store = MongoDBJobStore(client=client)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.add_job(count_run, "date", run_date=dt.datetime(2031, 1, 1, tzinfo=UTC), args=["x"], id="job")
    scheduler.start(paused=True)
    try:
        restartable.stop()
        with pytest.raises(PyMongoError):
            scheduler.modify_job("job", args=["changed"])
        with pytest.raises(PyMongoError):
            store.update_job(make_job(scheduler, "job", args=("changed",)))
        with pytest.raises(PyMongoError):
            scheduler.remove_job("job")
        restartable.start()
        job = store.lookup_job("job")  # nothing was kept to be written now: the stored job stands
        assert job is not None and job.args == ("x",)
    finally:
        scheduler.shutdown(wait=False)
        client.close()


def test_the_last_loop_pass_after_shutdown_is_quiet(
    database: str, mongodb_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler's last pass runs after its stores shut down (the store closed its client):
    it is answered quietly instead of logging 'Error getting due jobs'."""
    store = MongoDBJobStore(database=database, host=mongodb_uri)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.add_job(count_run, "interval", hours=1, args=["x"], id="hourly")
    scheduler.start()
    assert loop_is_alive(scheduler)
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        scheduler.shutdown()  # joins the scheduler's thread: its last pass is over
    assert [r.getMessage() for r in caplog.records if "Error getting due jobs" in r.getMessage()] == []
