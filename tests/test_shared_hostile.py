"""Shared mode: every lease field is hostile input (issue 14 part 4, issue 16).

Whatever BSON value a document's ``lease`` holds (a string, numbers, arrays, nested documents,
huge, negative or non-finite times, a forged holder or a forged pending fire time), it can at
most delay or skip that one job: no scheduler thread dies (in any process sharing the
collection), the store's own threads go on, and no run time is handed to the scheduler that the
job's state does not have.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .helpers import UTC, RunLog, loop_is_alive, make_job, wait_for

RUNS = RunLog()
THREE_DAYS_AGO = time.time() - 3 * 86400


def ran(name: str) -> None:
    """The jobs under test: each run is counted by name."""
    RUNS.record(name)


#: name -> the lease another program wrote on that job's document
HOSTILE: dict[str, Any] = {
    "a string": "x",
    "a number": 5,
    "a huge negative number": -1e300,
    "an empty document": {},
    "an array of leases": [{"holder": "ghost", "until": 1e308, "token": 1}],
    "fields of the wrong types": {
        "holder": 123,
        "until": "z",
        "token": {"$gt": 1},
        "pending": "x",
        "remove": "yes",
    },
    "nested documents": {"holder": {"a": {"b": []}}, "until": {"$date": 1}, "token": [1, 2]},
    "a forged pending time with a token": {
        "holder": "ghost",
        "until": 0,
        "token": 7,
        "pending": THREE_DAYS_AGO,
    },
    "a forged pending time (issue 14)": {"holder": "ghost", "until": 0, "pending": THREE_DAYS_AGO},
    "a pending time from 1970": {"holder": "ghost", "until": 0, "token": 8, "pending": 0.0},
    "a pending time beyond the calendar": {"holder": "ghost", "until": 0, "token": 9, "pending": 1e300},
    "a forged holder until far away": {"holder": "ghost", "until": 1e308, "token": 5},
    "a removal mark": {"holder": "ghost", "until": 0, "token": 3, "pending": THREE_DAYS_AGO, "remove": True},
}
if not os.environ.get("JOBSHELF_NX"):  # NX-27017 cannot store NaN or infinity
    HOSTILE["a NaN expiry"] = {"holder": "ghost", "until": math.nan, "token": 4}
    HOSTILE["a forged holder until infinity"] = {"holder": "ghost", "until": math.inf, "token": 6}
    HOSTILE["no holder until infinity"] = {"until": math.inf, "token": 6}


@pytest.fixture
def schedulers(mongo_client: MongoClient[Any], database: str) -> Iterator[list[BackgroundScheduler]]:
    made: list[BackgroundScheduler] = []
    yield made
    for scheduler in made:
        if scheduler.running:
            scheduler.shutdown(wait=False)


def shared_scheduler(client: MongoClient[Any], database: str) -> tuple[BackgroundScheduler, MongoDBJobStore]:
    store = MongoDBJobStore(database=database, client=client, shared=True, lease=2)
    return BackgroundScheduler(timezone=UTC, jobstores={"default": store}), store


def test_hostile_leases_at_most_delay_their_own_job(
    mongo_client: MongoClient[Any], database: str, schedulers: list[BackgroundScheduler]
) -> None:
    RUNS.clear()
    jobs = mongo_client[database].jobs
    setup = BackgroundScheduler(timezone=UTC)
    adder = MongoDBJobStore(database=database, client=mongo_client)
    adder.start(setup, "setup")
    start = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    for name in [*HOSTILE, "heartbeat"]:
        trigger = IntervalTrigger(seconds=0.25 if name == "heartbeat" else 1, start_date=start)
        adder.add_job(make_job(setup, name, func=ran, args=(name,), trigger=trigger, next_run_time=start,
                               misfire_grace_time=None, coalesce=True, max_instances=3))  # fmt: skip
    for name, value in HOSTILE.items():
        jobs.update_one({"_id": name}, {"$set": {"lease": value}})

    run_times: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def record(event: Any) -> None:
        with lock:
            run_times[event.job_id].append(event.scheduled_run_time.timestamp())

    stores = []
    for _ in range(2):  # every process sharing the collection meets every lease
        scheduler, store = shared_scheduler(mongo_client, database)
        stores.append(store)
        scheduler.add_listener(record, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
        schedulers.append(scheduler)
        scheduler.start()

    # each job runs (a forged holder delays its job until it is found to have no liveness record)
    assert RUNS.wait_until(lambda counts: all(counts[name] >= 2 for name in HOSTILE), timeout=20), [
        name for name in HOSTILE if RUNS[name] < 2
    ]
    assert all(loop_is_alive(scheduler) for scheduler in schedulers)

    # the same values written again and again while the jobs run, claimed and written back
    stop = time.monotonic() + 2.0
    values = list(HOSTILE.values())
    chaos = random.Random(16)
    while time.monotonic() < stop:
        name = chaos.choice(list(HOSTILE))
        jobs.update_one({"_id": name}, {"$set": {"lease": chaos.choice(values)}})
        time.sleep(0.01)
    RUNS.clear()
    assert RUNS.wait_until(lambda counts: all(counts[name] >= 2 for name in HOSTILE), timeout=20), [
        name for name in HOSTILE if RUNS[name] < 2
    ]
    assert all(loop_is_alive(scheduler) for scheduler in schedulers)
    heartbeats = RUNS["heartbeat"]

    # the stores' own threads live on: both still check in (their records stay alive and move on)
    before = {record.holder: record.seen for record in stores[0].holders()}

    def both_checked_in_again() -> bool:
        alive = [r for r in stores[0].holders() if r.alive]
        return len(alive) == 2 and all(r.seen is not None and r.seen > before[r.holder] for r in alive)

    assert wait_for(both_checked_in_again, timeout=10), stores[0].holders()
    assert RUNS.wait_until(
        lambda counts: counts["heartbeat"] >= heartbeats + 3, timeout=10
    )  # the heartbeat runs on

    # no run time the state does not have: every one is on the job's one-second grid from start
    with lock:
        for name in HOSTILE:
            for run_time in run_times[name]:
                offset = run_time - start.timestamp()
                assert offset >= 0 and abs(offset - round(offset)) < 1e-6, (name, offset)


def test_hostile_liveness_records_do_not_stop_the_upkeep(
    mongo_client: MongoClient[Any], database: str, schedulers: list[BackgroundScheduler]
) -> None:
    RUNS.clear()
    holders = mongo_client[database]["jobs_holders"]
    holders.insert_many([
        {"_id": 5, "seen": "yesterday"},
        {"_id": "no-seen"},
        {"_id": "old", "seen": dt.datetime(1970, 1, 1)},
        {"_id": {"a": [1]}, "seen": dt.datetime(2999, 1, 1)},
        {"_id": "future", "seen": dt.datetime(9999, 12, 31), "running": "many", "pid": "x"},
    ])  # fmt: skip
    scheduler, store = shared_scheduler(mongo_client, database)
    schedulers.append(scheduler)
    scheduler.add_job(ran, "interval", seconds=0.2, args=("tick",), id="tick", misfire_grace_time=None)
    scheduler.start()
    assert RUNS.wait_until(lambda counts: counts["tick"] >= 5, timeout=10)
    mine = [r for r in store.holders() if r.holder == store.holder]
    assert len(mine) == 1 and mine[0].seen is not None
    first = mine[0].seen

    def checked_in_again() -> bool:
        (again,) = [r for r in store.holders() if r.holder == store.holder]
        return again.seen is not None and again.seen > first

    assert wait_for(checked_in_again, timeout=10)  # still checking in
    assert loop_is_alive(scheduler)
    # every record is listed, malformed fields as None, none raising
    listed = {repr(r.holder): r for r in store.holders()}
    assert listed["5"].seen is None and not listed["5"].alive
    assert listed["'future'"].running is None and listed["'future'"].pid is None


@pytest.mark.parametrize(
    ("back", "handed"),
    [(1, 1), (3, 3), (100, 100), (101, 0), (2.5, 0), (-1, 0)],
    ids=["one fire time", "three", "a hundred", "one too many", "off the trigger's grid", "ahead"],
)
def test_a_pending_time_takes_back_at_most_a_hundred_fire_times_of_the_trigger(
    mongo_client: MongoClient[Any], database: str, back: float, handed: int
) -> None:
    """A dead holder's pending fire time (or a forged one) is run from only if the job's trigger
    reaches its state's next run time from it within 100 fire times; otherwise the job runs as its
    state says, and never earlier than a fire time of its own."""
    setup = BackgroundScheduler(timezone=UTC)
    adder = MongoDBJobStore(database=database, client=mongo_client)
    adder.start(setup, "setup")
    state_time = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=2)
    trigger = IntervalTrigger(seconds=1, start_date=state_time - dt.timedelta(days=1))
    adder.add_job(
        make_job(setup, "taken", trigger=trigger, next_run_time=state_time, misfire_grace_time=None)
    )
    lease = {"holder": "ghost", "until": 0.0, "token": 7, "pending": state_time.timestamp() - back}
    mongo_client[database].jobs.update_one({"_id": "taken"}, {"$set": {"lease": lease}})
    store = MongoDBJobStore(database=database, client=mongo_client, shared=True)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        (job,) = store.get_due_jobs(dt.datetime.now(UTC))
        assert job.next_run_time == state_time - dt.timedelta(seconds=handed)
    finally:
        store.shutdown()


@pytest.mark.parametrize(
    ("forged", "said"),
    [({"seen": dt.datetime(1970, 1, 1)}, 1), ({"beat": -1}, 1), ({"beat": {"x": list(range(5000))}}, 0)],
    ids=["seen in 1970", "beat going back", "beat a huge document"],
)
def test_a_live_holders_record_rewritten_to_look_stale_does_not_hand_its_claims_to_others(
    mongo_client: MongoClient[Any], database: str, caplog: pytest.LogCaptureFixture, forged: Any, said: int
) -> None:
    """Another writer keeps rewriting a live holder's record (``seen`` to 1970, or ``beat``; every
    0.1 s, for longer than ``dead_after`` and the time a record must stay unchanged): the holder
    goes on checking in, so its record keeps changing, and nobody takes it for dead or takes its
    claims over (before, another process ran them again: found by a red-team run). A record going
    back in time is reported once, in a short line."""
    setup = BackgroundScheduler(timezone=UTC)
    for index in range(4):
        add = MongoDBJobStore(database=database, client=mongo_client)
        add.start(setup, "setup")
        add.add_job(make_job(setup, f"held{index}", next_run_time=dt.datetime(2030, 1, 1, tzinfo=UTC)))
    options = {"database": database, "client": mongo_client, "shared": True, "dead_after": 4}
    victim, observer = MongoDBJobStore(**options), MongoDBJobStore(**options)
    victim.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        due = dt.datetime(2030, 1, 2, tzinfo=UTC)
        assert sorted(job.id for job in victim.get_due_jobs(due)) == [f"held{index}" for index in range(4)]
        observer.start(BackgroundScheduler(timezone=UTC), "default")
        holders = mongo_client[database]["jobs_holders"]
        forging_until = time.monotonic() + 4 + 3 + 2  # dead_after, three quarters of it, and more
        taken: list[str] = []
        with caplog.at_level(logging.WARNING, logger="jobshelf.shared"):
            while time.monotonic() < forging_until:
                holders.update_one({"_id": victim.holder}, {"$set": forged})
                taken += [job.id for job in observer.get_due_jobs(due)]
                time.sleep(0.1)
        assert taken == []
        reports = [r.getMessage() for r in caplog.records if "went back in time" in r.getMessage()]
        assert len(reports) == said and all(victim.holder in m and len(m) < 1000 for m in reports), reports
        assert not any("stopped checking in" in r.getMessage() for r in caplog.records)
    finally:
        observer.shutdown()
        victim.shutdown()
