"""Shared mode: several schedulers on one store, each fire time once (issue 11).

In-process tests check the claims and leases on the store's API; tests/processes runs real
scheduler processes (tests/shared_worker.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD

from .helpers import UTC, RunLog, dummy_job, make_job
from .shared_worker import CommandCounter, work

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def shared(mongo_client: MongoClient[Any], database: str) -> Iterator[Any]:
    """Shared stores on one collection, each started with a scheduler of its own (not running)."""
    made: list[MongoDBJobStore] = []

    def factory(**options: Any) -> MongoDBJobStore:
        store = MongoDBJobStore(database=database, client=mongo_client, shared=True, **options)
        store.start(BackgroundScheduler(timezone=UTC), "default")
        made.append(store)
        return store

    yield factory
    for store in made:
        store.shutdown()


def add_due(store: MongoDBJobStore, count: int, when: dt.datetime = T0) -> None:
    scheduler = BackgroundScheduler(timezone=UTC)
    for index in range(count):
        store.add_job(make_job(scheduler, f"j{index:03}", next_run_time=when))


def claim_all(store: MongoDBJobStore, when: dt.datetime = T0, passes: int = 50) -> list[str]:
    """Claim passes until one finds nothing more (each pass takes at most this store's share)."""
    claimed: list[str] = []
    for _ in range(passes):
        got = [job.id for job in store.get_due_jobs(when)]
        if not got:
            break
        claimed += got
    return claimed


def test_claims_are_exclusive(shared: Any) -> None:
    stores = [shared() for _ in range(4)]
    add_due(stores[0], 60)
    results: list[list[str]] = [[] for _ in stores]
    barrier = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        barrier.wait(5)
        results[index] = claim_all(stores[index])

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == [f"j{index:03}" for index in range(60)]  # each exactly once
    assert shared().get_due_jobs(T0) == []  # held: no other store gets them


def test_another_holders_lease_counts_from_its_expiry(shared: Any) -> None:
    holder, other = shared(lease=30), shared(lease=30)
    add_due(holder, 3)
    assert len(holder.get_due_jobs(T0)) == 3
    started = dt.datetime.now(UTC)
    next_time = other.get_next_run_time()
    assert next_time is not None and next_time > started + dt.timedelta(seconds=25)  # not T0: no spinning


def test_a_dead_holders_jobs_are_claimed_after_its_lease(shared: Any) -> None:
    holder, survivor = shared(lease=1), shared(lease=1)
    add_due(holder, 5)
    assert len(holder.get_due_jobs(T0)) == 5  # and then the holder "dies": it never updates them
    claimed_at = time.time()
    assert survivor.get_due_jobs(T0) == []
    time.sleep(max(0.0, claimed_at + 1.1 - time.time()))  # the lease runs out (its holder is live)
    taken = [survivor.lookup_job(job_id) for job_id in claim_all(survivor)]
    assert sorted(job.id for job in taken if job) == [f"j{index:03}" for index in range(5)]
    assert all(job and job.next_run_time == T0 for job in taken)  # their fire time is run, not skipped


def test_a_store_that_never_checked_in_judges_the_records_on_the_servers_clock(
    mongo_client: MongoClient[Any], database: str
) -> None:
    """An operator's store (not started) reading the liveness records: a holder whose only record
    is stale (killed, nobody else left) is dead, not alive for being the newest record."""
    records = mongo_client[database]["jobs_holders"]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    records.insert_many([{"_id": "host:1:killed", "seen": now - dt.timedelta(seconds=30), "pid": 1}])
    observer = MongoDBJobStore(database=database, client=mongo_client, shared=True)
    (record,) = observer.holders()
    assert record.holder == "host:1:killed" and not record.alive
    records.insert_one({"_id": "host:2:live", "seen": now, "pid": 2})
    assert {r.holder: r.alive for r in observer.holders()} == {"host:2:live": True, "host:1:killed": False}


def test_the_application_changing_a_job_releases_its_lease(shared: Any) -> None:
    holder, app = shared(lease=30), shared(lease=30)
    add_due(holder, 1)
    assert [job.id for job in holder.get_due_jobs(T0)] == ["j000"]
    moved = make_job(BackgroundScheduler(timezone=UTC), "j000", next_run_time=T0 + dt.timedelta(minutes=1))
    app.update_job(moved)  # modify_job / reschedule from any process
    assert app.collection.find_one({"_id": "j000"}, ["lease"]).get("lease") is None
    assert [job.id for job in app.get_due_jobs(T0 + dt.timedelta(minutes=1))] == ["j000"]


def test_everything_else_works_in_shared_mode(
    shared: Any, mongo_client: MongoClient[Any], database: str
) -> None:
    store, other = shared(), shared()
    add_due(store, 3)
    mongo_client[database].jobs.insert_one({"_id": "bad", "next_run_time": T0.timestamp(), "job_state": b"x",
                                            FORMAT_FIELD: "pickle"})  # fmt: skip
    assert sorted(job.id for job in store.get_due_jobs(T0)) == ["j000", "j001", "j002"]
    assert [q.id for q in store.get_quarantined_jobs()] == ["bad"]
    assert sorted(job.id for job in other.get_all_jobs()) == ["j000", "j001", "j002"]
    paused = make_job(BackgroundScheduler(timezone=UTC), "j001", next_run_time=None)
    other.update_job(paused)  # pause from another process
    assert [job.id for job in other.get_all_jobs()][-1] == "j001"
    other.remove_job("j002")
    other.remove_all_jobs()
    assert other.get_all_jobs() == [] and [q.id for q in other.get_quarantined_jobs()] == ["bad"]


def test_wakeups_use_a_change_stream_where_there_is_one(
    shared: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobshelf.shared"):
        store = shared()
        deadline = time.monotonic() + 10
        while store.wakeup_mode == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.wakeup_mode == "change stream"
    assert any("waking schedulers with a change stream" in r.getMessage() for r in caplog.records)


def test_without_change_streams_a_bounded_recheck_is_used(caplog: pytest.LogCaptureFixture) -> None:
    if os.environ.get("JOBSHELF_MONGODB_URI"):
        pytest.skip("starts its own standalone server (no replica set, so no change streams)")
    from secantus import SecantusDBServer

    server = SecantusDBServer(port=0, storage_path=tempfile.mkdtemp(), replica_set_name=None)
    server.start()
    client: MongoClient[Any] = MongoClient(server.uri)
    woken = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.wakeup = woken.set  # type: ignore[method-assign] - count the wake-ups
    store = MongoDBJobStore(client=client, shared=True, recheck=0.2)
    other = MongoDBJobStore(client=client)
    try:
        with caplog.at_level(logging.INFO, logger="jobshelf.shared"):
            store.start(scheduler, "default")
            assert store.get_next_run_time() is None  # nothing planned
            assert not woken.wait(0.5)  # nothing changed: no wake-up
            other.start(BackgroundScheduler(timezone=UTC), "other")
            other.add_job(make_job(scheduler, "added", next_run_time=T0))  # by another process
            assert woken.wait(5)
        assert store.wakeup_mode == "re-check"
        messages = [record.getMessage() for record in caplog.records]
        assert any(
            "change streams are not available" in m and "re-checking every 0.2s" in m for m in messages
        )
    finally:
        store.shutdown()
        client.close()
        server.stop()


class Settings:
    """A job argument of a class without ``__eq__``: two equal ones compare by identity."""

    def __init__(self, retries: int) -> None:
        self.retries = retries


def register(client: MongoClient[Any], database: str, *args: Any, **trigger: Any) -> BackgroundScheduler:
    """What a web app's worker does at start: register its job with a fixed id."""
    store = MongoDBJobStore(database=database, client=client, shared=True)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.add_job(dummy_job, "interval", args=args, id="registered", replace_existing=True, **trigger)
    scheduler.start(paused=True)  # the job is stored now; nothing runs
    return scheduler


def test_registering_an_unchanged_job_again_keeps_its_schedule_and_lease(
    shared: Any, mongo_client: MongoClient[Any], database: str
) -> None:
    jobs = mongo_client[database].jobs
    workers = [register(mongo_client, database, weeks=26)]
    try:
        stored = jobs.find_one({"_id": "registered"})
        holder = shared()
        assert [job.id for job in holder.get_due_jobs(T0)] == ["registered"]  # claimed: a lease
        claimed = jobs.find_one({"_id": "registered"})
        assert claimed["lease"]["holder"] == holder.holder

        workers.append(register(mongo_client, database, weeks=26))  # another worker starts: unchanged
        again = jobs.find_one({"_id": "registered"})
        assert again == claimed  # schedule, state and lease all stand
        assert again["next_run_time"] == stored["next_run_time"]

        workers[0].pause_job("registered")  # paused by the application: a real change
        workers.append(register(mongo_client, database, weeks=26))
        assert jobs.find_one({"_id": "registered"})["next_run_time"] is None  # still paused

        workers.append(register(mongo_client, database, weeks=13))  # a changed definition replaces it
        replaced = jobs.find_one({"_id": "registered"})
        assert "lease" not in replaced and replaced["job_state"] != again["job_state"]
        assert replaced["next_run_time"] == pytest.approx(time.time() + 13 * 7 * 86400, abs=10)
    finally:
        for scheduler in workers:
            scheduler.shutdown(wait=False)


def test_registering_again_with_arguments_that_compare_by_identity_keeps_the_schedule(
    shared: Any, mongo_client: MongoClient[Any], database: str
) -> None:
    jobs = mongo_client[database].jobs
    workers = [register(mongo_client, database, Settings(3), weeks=26)]
    try:
        workers[0].pause_job("registered")
        paused = jobs.find_one({"_id": "registered"})
        workers.append(register(mongo_client, database, Settings(3), weeks=26))  # equal, not ==
        assert jobs.find_one({"_id": "registered"}) == paused  # still paused: nothing written
        workers.append(register(mongo_client, database, Settings(5), weeks=26))  # a changed argument
        assert jobs.find_one({"_id": "registered"})["next_run_time"] is not None  # replaced
    finally:
        for scheduler in workers:
            scheduler.shutdown(wait=False)


def test_a_store_shutting_down_leaves_what_it_claimed_to_others_at_once(shared: Any) -> None:
    leaving, staying = shared(lease=30), shared(lease=30)
    add_due(leaving, 4)
    assert len(claim_all(leaving)) == 4  # claimed, never started
    assert claim_all(staying) == []
    leaving.shutdown()  # e.g. a worker stopping at a fire time
    assert sorted(claim_all(staying)) == [f"j{index:03}" for index in range(4)]  # not after 30 s: now


def test_shared_mode_costs_about_what_one_store_costs(mongodb_uri: str, database: str) -> None:
    """Server commands per fire time (pymongo's command monitoring), shared against plain, one
    process each, the same jobs: the goal is 1.3x (the benchmarks measure it); a change that
    doubles the cost fails here."""
    runs: dict[str, tuple[CommandCounter, RunLog]] = {}
    schedulers = []
    for mode in ("plain", "shared"):
        counter, ran = CommandCounter(), RunLog()
        client: MongoClient[Any] = MongoClient(mongodb_uri, event_listeners=[counter])
        options = {"shared": True} if mode == "shared" else {}
        store = MongoDBJobStore(database=f"{database}_{mode}", client=client, **options)
        scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
        scheduler.add_listener(lambda event, ran=ran: ran.record(event.job_id), EVENT_JOB_EXECUTED)
        for index in range(10):
            scheduler.add_job(work, "interval", seconds=0.5, id=f"job{index}", misfire_grace_time=None)
        runs[mode] = (counter, ran)
        schedulers.append((scheduler, client, f"{database}_{mode}"))
    for scheduler, _, _ in schedulers:
        scheduler.start()
    try:
        for _, ran in runs.values():
            assert ran.wait_until(lambda counts: sum(counts.values()) >= 100, timeout=30)
    finally:
        for scheduler, client, name in schedulers:
            scheduler.shutdown()
            client.drop_database(name)
            client.close()
    cost = {
        mode: sum(counter.snapshot().values()) / sum(ran.counts().values())
        for mode, (counter, ran) in runs.items()
    }
    assert cost["plain"] < 2, cost  # 1.1 with 20 one-second jobs; more passes per fire time here
    assert cost["shared"] < 2.5 * cost["plain"], cost
