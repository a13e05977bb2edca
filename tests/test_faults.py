"""Faults: the database goes away and comes back; many threads share one store (issue 9)."""

from __future__ import annotations

import datetime as dt
import logging
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .helpers import UTC, AnyStore, RunLog, loop_is_alive, make_job, wait_for

#: Runs of the jobs below. Deadlines are generous: a wait returns as soon as its runs happened, and
#: stopping the server (closing its storage) can take many seconds on a loaded machine.
RUNS = RunLog()


def count_run(name: str) -> None:
    """The jobs' callable (a module function, so that it is stored by reference)."""
    RUNS.record(name)


class RestartableServer:
    """A SecantusDB server on disk that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        from secantus import SecantusDBServer

        self._cls = SecantusDBServer
        self.path = tempfile.mkdtemp(prefix="jobshelf-outage-")
        self.server = SecantusDBServer(port=0, storage_path=self.path)
        self.server.start()
        self.port = self.server.port
        self.uri = str(self.server.uri)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = self._cls(port=self.port, storage_path=self.path)
        self.server.start()

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def restartable(mongodb_uri: str) -> Iterator[RestartableServer]:
    import os

    if os.environ.get("JOBSHELF_MONGODB_URI"):
        pytest.skip("needs a server this test can stop and start: the embedded SecantusDB")
    server = RestartableServer()
    yield server
    server.close()


SERVER: dict[str, RestartableServer] = {}


def stop_the_server() -> None:
    """Run by the debug executor inside the scheduler's loop: the update right after it fails.

    The run is recorded once the server has stopped and closed its storage."""
    SERVER["server"].stop()
    count_run("stop")


def test_an_outage_longer_than_every_timeout_does_not_kill_the_scheduler(
    restartable: RestartableServer, caplog: pytest.LogCaptureFixture
) -> None:
    from apscheduler.executors.debug import DebugExecutor

    RUNS.clear()
    SERVER["server"] = restartable
    # Timeouts far below the outage: every operation during it fails, as after pymongo's 30 s.
    client: MongoClient[Any] = MongoClient(
        restartable.uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300, socketTimeoutMS=2000
    )
    store = MongoDBJobStore(client=client)
    scheduler = BackgroundScheduler(
        timezone=UTC, jobstores={"default": store}, jobstore_retry_interval=0.5,
        executors={"default": {"type": "threadpool"}, "inline": DebugExecutor()},
    )  # fmt: skip
    scheduler.start()
    try:
        now = dt.datetime.now(UTC)
        for name in ("a", "b", "c"):
            scheduler.add_job(
                count_run, IntervalTrigger(seconds=0.2), args=[name], id=name, next_run_time=now
            )
        assert RUNS.wait_until(lambda runs: min(runs[n] for n in "abc") >= 2, 60), RUNS.counts()
        with caplog.at_level(logging.WARNING):
            scheduler.add_job(stop_the_server, IntervalTrigger(hours=1), id="stop", executor="inline",
                              next_run_time=dt.datetime.now(UTC))  # fmt: skip
            assert RUNS.wait_until(lambda runs: runs["stop"] == 1, 60)
            # The outage lasts five loop passes, each of which fails to read the store (the stop job's
            # update and the others' fail meanwhile); the loop runs on through every one of them.
            for _ in range(5):
                assert loop_is_alive(scheduler), "the scheduler's loop stopped during the outage"
            restartable.start()
            before = RUNS.counts()
            assert RUNS.wait_until(lambda runs: all(runs[n] >= before[n] + 3 for n in "abc"), 30), (
                before, RUNS.counts()
            )  # fmt: skip
        assert loop_is_alive(scheduler)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert sorted(jobs) == ["a", "b", "c", "stop"]
        assert jobs["stop"].next_run_time > dt.datetime.now(UTC) + dt.timedelta(minutes=50)  # kept write
        assert RUNS["stop"] == 1  # and so it did not run again
        assert store.get_quarantined_jobs() == []
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert 'the update of job "stop" is kept in memory' in messages
        assert "the writes kept during the outage are written" in messages
    finally:
        scheduler.shutdown(wait=False)
        client.close()


def inline_scheduler(
    restartable: RestartableServer,
) -> tuple[MongoClient[Any], MongoDBJobStore, BackgroundScheduler]:
    """A scheduler whose jobs run inside its loop (DebugExecutor), on a store whose client gives up
    fast: a job that stops the server makes the loop's own update meet the outage."""
    from apscheduler.executors.debug import DebugExecutor

    RUNS.clear()
    SERVER["server"] = restartable
    client: MongoClient[Any] = MongoClient(
        restartable.uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    store = MongoDBJobStore(client=client)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store}, jobstore_retry_interval=0.5,
                                    executors={"default": DebugExecutor()})  # fmt: skip
    return client, store, scheduler


def test_writes_kept_during_an_outage_are_written_in_order_when_it_ends(
    restartable: RestartableServer,
) -> None:
    """The loop updates one job and removes another while the server is down: both land later."""
    client, store, scheduler = inline_scheduler(restartable)
    now = dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    scheduler.add_job(stop_the_server, IntervalTrigger(hours=1), id="stop", next_run_time=now)
    scheduler.add_job(
        count_run, "date", run_date=now + dt.timedelta(microseconds=1), args=["gone"], id="gone"
    )
    scheduler.start()
    try:
        assert RUNS.wait_until(lambda runs: runs["gone"] == 1, 60)  # ran right after the server stopped
        # a loop pass after that run: its removal has met the outage (and is kept) before the restart
        assert loop_is_alive(scheduler)
        restartable.start()
        assert wait_for(lambda: store.lookup_job("gone") is None, 60)
        stop = store.lookup_job("stop")
        assert stop is not None and stop.next_run_time > now + dt.timedelta(minutes=50)
        assert loop_is_alive(scheduler)
        assert (RUNS["stop"], RUNS["gone"]) == (1, 1)
    finally:
        scheduler.shutdown(wait=False)
        client.close()


def test_many_threads_on_one_store(store: AnyStore, scheduler: BackgroundScheduler) -> None:
    t0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
    errors: list[BaseException] = []
    final: dict[str, int | None] = {}
    final_lock = threading.Lock()

    def worker(worker_id: int) -> None:
        rng = random.Random(worker_id)
        try:
            for index in range(15):
                job_id = f"w{worker_id}-{index}"
                store.add_job(make_job(scheduler, job_id, next_run_time=t0, args=(0,)))
                with pytest.raises(ConflictingIdError):
                    store.add_job(make_job(scheduler, job_id, next_run_time=t0))
                version = 0
                for version in range(1, rng.randint(2, 4)):
                    store.update_job(make_job(scheduler, job_id, next_run_time=t0, args=(version,)))
                job = store.lookup_job(job_id)
                assert job is not None and job.args == (version,), (job_id, job and job.args, version)
                if rng.random() < 0.4:
                    store.remove_job(job_id)
                    assert store.lookup_job(job_id) is None
                    with pytest.raises(JobLookupError):
                        store.remove_job(job_id)
                    with final_lock:
                        final[job_id] = None
                else:
                    with final_lock:
                        final[job_id] = version
                store.get_due_jobs(t0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = {job.id: job.args[0] for job in store.get_all_jobs()}
    assert stored == {job_id: version for job_id, version in final.items() if version is not None}
    assert store.get_quarantined_jobs() == []


def test_a_database_error_inside_the_loop_is_logged_not_raised(
    mongo_client: MongoClient[Any], database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A write the server refuses (here: a unique index the next run time would break) is not a
    connection error: it is logged and the job fires again as stored, and the loop lives."""
    RUNS.clear()
    store = MongoDBJobStore(database=database, client=mongo_client)
    start = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    store.collection.create_index("next_run_time", unique=True, name="unique_next_run_time")
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.start()
    try:
        with caplog.at_level(logging.ERROR):
            scheduler.add_job(
                count_run, IntervalTrigger(seconds=1, start_date=start), args=["ticker"], id="ticker"
            )
            # fires at start + 1 s: the ticker's update to that time breaks the unique index
            scheduler.add_job(count_run, "date", run_date=start + dt.timedelta(seconds=1), args=["blocker"],
                              id="blocker")  # fmt: skip
            assert RUNS.wait_until(lambda runs: runs["blocker"] == 1 and runs["ticker"] >= 3, 20), (
                RUNS.counts()
            )  # fmt: skip
        assert loop_is_alive(scheduler)
    finally:
        scheduler.shutdown()
    messages = [record.getMessage() for record in caplog.records]
    assert any('The update of job "ticker" could not be written (DuplicateKeyError' in m for m in messages)


def test_a_kept_write_the_server_then_refuses_is_dropped_not_failing_every_read(
    restartable: RestartableServer, caplog: pytest.LogCaptureFixture
) -> None:
    client, store, scheduler = inline_scheduler(restartable)
    # the kept update of "stop" will move it to the blocker's time, which this index refuses
    store.collection.create_index("next_run_time", unique=True, name="unique_next_run_time")
    now = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    scheduler.add_job(stop_the_server, IntervalTrigger(hours=1, start_date=now), id="stop")
    scheduler.add_job(count_run, "date", run_date=now + dt.timedelta(hours=1), args=["blocker"], id="blocker")
    scheduler.start()
    try:
        # the server has stopped; the job's update (to now + 1 h) is kept
        assert RUNS.wait_until(lambda runs: runs["stop"] == 1, 60)
        assert loop_is_alive(scheduler)  # a loop pass after the run: the update met the outage
        restartable.start()
        with caplog.at_level(logging.ERROR):
            assert [job.id for job in store.get_all_jobs()] == ["stop", "blocker"]  # reads work again
            assert [job.id for job in store.get_all_jobs()] == ["stop", "blocker"]
        messages = [record.getMessage() for record in caplog.records]
        assert any('The update of job "stop" could not be written (DuplicateKeyError' in m for m in messages)
        assert loop_is_alive(scheduler)
    finally:
        scheduler.shutdown(wait=False)
        client.close()
