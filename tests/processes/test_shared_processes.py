"""Shared mode as web apps run it (issue 16), with real processes (tests/shared_worker.py):
a store built before a fork, takeover of a killed holder's jobs within seconds, the work spread
over the processes, every miss reported, registration at every worker start.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import ASCENDING, MongoClient

from jobshelf import MongoDBJobStore

from ..helpers import UTC, make_job, wait_for
from ..shared_worker import work

pytestmark = pytest.mark.subprocess


def prepare(client: MongoClient[Any], database: str) -> tuple[Any, MongoDBJobStore, BackgroundScheduler]:
    """The executions collection with its unique index, and a plain store to add the jobs with."""
    db = client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    store = MongoDBJobStore(database=database, client=client)
    setup = BackgroundScheduler(timezone=UTC)
    store.start(setup, "setup")
    return db, store, setup


def add_interval_jobs(store: MongoDBJobStore, setup: BackgroundScheduler, count: int, interval: float,
                      start: dt.datetime, **options: Any) -> None:  # fmt: skip
    for index in range(count):
        trigger = IntervalTrigger(seconds=interval, start_date=start)
        settings = {"misfire_grace_time": None, "max_instances": 5, **options}
        store.add_job(
            make_job(setup, f"job{index:02}", func=work, trigger=trigger, next_run_time=start, **settings)
        )


def worker(
    uri: str, database: str, seconds: float, *options: str, lease: float = 30
) -> subprocess.Popen[str]:
    """A scheduler process (tests/shared_worker.py); its stderr goes to a file (``errors(process)``),
    so that a process logging a lot never blocks on a full pipe."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read and closed by errors()
    command = [sys.executable, "-m", "tests.shared_worker", uri, database, str(seconds), str(lease), "shared"]
    process = subprocess.Popen([*command, *options], stdout=subprocess.PIPE, stderr=log, text=True)
    process.log = log  # type: ignore[attr-defined]
    return process


def errors(process: subprocess.Popen[str]) -> str:
    """What the process wrote to stderr (after it exited)."""
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    text: str = log.read()
    log.close()
    return text


def expected_fire_times(count: int, start: float, interval: float, until: float) -> set[tuple[str, float]]:
    fire_times = set()
    for index in range(count):
        fire_time = start
        while fire_time < until:
            fire_times.add((f"job{index:02}", round(fire_time, 3)))
            fire_time += interval
    return fire_times


def test_a_store_built_before_a_fork_runs_each_fire_time_once_in_its_children(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    """Two parents at once: one builds the store with its own client, the other passes a client in;
    each forks three children that start schedulers on the store it built."""
    variants = {database: [], f"{database}_passed": ["--client-before-fork"]}
    start = dt.datetime.now(UTC) + dt.timedelta(seconds=2.5)
    parents = {}
    try:
        for name, option in variants.items():
            _, store, setup = prepare(mongo_client, name)
            add_interval_jobs(store, setup, 8, 0.5, start)
            parents[name] = worker(mongodb_uri, name, 6, "--forks", "3", *option)
        for name, parent in parents.items():
            out, _ = parent.communicate(timeout=60)
            err = errors(parent)
            assert parent.returncode == 0, err[-3000:]
            assert "children [0, 0, 0]" in out

            db = mongo_client[name]
            assert db.duplicates.count_documents({}) == 0, list(db.duplicates.find())
            executions = list(db.executions.find())
            seen = {(e["job"], round(e["run_time"], 3)) for e in executions}
            assert expected_fire_times(8, start.timestamp(), 0.5, start.timestamp() + 2.5) - seen == set()
            by_child = Counter(e["by"] for e in executions)
            assert len(by_child) == 3, by_child  # each child has a holder id of its own, and a share
            if variants[name]:  # a client passed in: works, and the store says how to do it properly
                assert err.count("was created in process") == 3 and "post_fork" in err
            else:  # the store's own client: replaced in each child, nothing to say
                assert "was created in process" not in err
    finally:
        mongo_client.drop_database(f"{database}_passed")


#: job groups of the failover test: (misfire_grace_time, coalesce), three jobs each
GROUPS = {
    "defaults": (1, True),
    "grace-1-each": (1, False),
    "no-grace-merged": (None, True),
    "no-grace-each": (None, False),
}


#: (job id, fire time, finished): a fire time a process held, and whether it recorded the run
Held = list[tuple[str, float, bool]]


def in_flight(db: Any, pid: int, among: Held | None = None) -> Held:
    """The fire times process ``pid`` holds and has not released, each with whether
    it recorded the run (finished: its release may or may not have landed, so a second run is
    allowed, not required). A run's record is written before its release is queued, so a fire time
    without a record was still in flight. With ``among``: those fire times, checked again."""
    me = f":{pid}"
    if among is None:
        leases = db.jobs.find({"lease.holder": {"$regex": f"{me}:"}, "lease.until": {"$gt": 0}})
        among = [(d["_id"], d["lease"].get("pending", d["next_run_time"]), False) for d in leases]
    recorded = {(e["job"], e["run_time"]) for e in db.executions.find({"by": {"$regex": f"{me}$"}})}
    return [(job_id, fire_time, (job_id, fire_time) in recorded) for job_id, fire_time, _ in among]


def kill_holding_a_run(db: Any, victim: subprocess.Popen[str], tries: int = 60) -> tuple[Held, float]:
    """Stop the process at a moment it holds a run in flight, read what it holds, SIGKILL it;
    return what it held and when it was killed."""
    for _ in range(tries):
        victim.send_signal(signal.SIGSTOP)
        held = in_flight(db, victim.pid)
        if any(not finished for _, _, finished in held):
            break
        victim.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    return held, time.time()


def test_work_spreads_and_a_killed_holders_jobs_run_elsewhere_within_seconds(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    """Three processes, twelve one-second jobs of 0.4 s each, the default lease (30 s): the work is
    shared (no process runs more than 45%); after a SIGKILL, the fire times the killed process had
    in flight run again elsewhere within seconds, not after the lease, and every fire time is
    accounted for as the README says for each combination of misfire_grace_time and coalesce."""
    db, store, setup = prepare(mongo_client, database)
    db.missed.create_index([("job", ASCENDING), ("run_time", ASCENDING)])
    workers = [worker(mongodb_uri, database, 20, "--apscheduler-defaults") for _ in range(3)]
    for process in workers:
        assert process.stdout is not None and process.stdout.readline().strip() == "started"
    stopping = time.time() + 20  # the survivors stop then: the last fire times may be cut short
    start = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    for group, (grace, coalesce) in GROUPS.items():
        for index in range(3):
            trigger = IntervalTrigger(seconds=1, start_date=start)
            store.add_job(make_job(setup, f"{group}-{index}", func=work, args=(0.4,), trigger=trigger,
                                   next_run_time=start, misfire_grace_time=grace, coalesce=coalesce,
                                   max_instances=1))  # fmt: skip
    spread_until = start.timestamp() + 6
    time.sleep(max(0.0, spread_until + 0.2 - time.time()))  # while runs are going on

    victim = workers[0]
    held, killed_at = kill_holding_a_run(db, victim)
    for process in workers:
        process.communicate(timeout=60)
    assert [process.returncode for process in workers] == [-signal.SIGKILL, 0, 0]

    executions = list(db.executions.find())
    # the work spreads: none of the three ran more than 45% of the fire times before the kill
    before = Counter(e["by"] for e in executions if e["run_time"] < spread_until - 1)
    assert sum(before.values()) >= 12 * 4
    assert max(before.values()) <= 0.45 * sum(before.values()), before

    # the killed process's runs in flight run again elsewhere within seconds (default lease: 30 s)
    held = in_flight(db, victim.pid, held)  # its own last writes may have landed after the kill
    assert any(not finished for _, _, finished in held), ("the killed process held no run in flight", held)
    executed = {}
    for e in executions:
        executed.setdefault((e["job"], round(e["run_time"], 3)), []).append(e)
    reports = list(db.missed.find())
    retaken = {}
    for job_id, fire_time in [(job_id, fire_time) for job_id, fire_time, finished in held if not finished]:
        again = [
            e["at"] - 0.4  # recorded when done
            for e in executed.get((job_id, round(fire_time, 3)), [])
            if not e["by"].endswith(f":{victim.pid}")
        ]
        merged = [e["at"] - 0.4 for e in executions if e["job"] == job_id and e["at"] > killed_at]
        # taken over and found later than the job's misfire_grace_time: reported missed by another
        # process (that fire time, or a later one it came with), as the README says
        reported = [m["at"] for m in reports if m["job"] == job_id and m["run_time"] >= fire_time - 1e-3
                    and m["at"] > killed_at and not m["by"].endswith(f":{victim.pid}")]  # fmt: skip
        first = min(again + merged + reported, default=float("inf"))
        retaken[(job_id, fire_time - start.timestamp())] = first - killed_at
    # taken over by liveness, not by the lease's expiry: the 3 s goal is measured by the benchmark
    # (python -m benchmarks.shared_bench: 2.1-2.8 s median); on a loaded machine takeovers of
    # 4.5-5.2 s were seen, so the bound here is a third of the lease
    assert max(retaken.values()) <= 10.0, (retaken, killed_at - start.timestamp())

    # every fire time is accounted for, as the README promises for each job's options: it ran; or
    # it was reported missed (EVENT_JOB_MISSED: later than misfire_grace_time) or skipped
    # (EVENT_JOB_MAX_INSTANCES: its earlier run still going); or, with coalesce, it was merged into
    # a later run (a takeover reports each merged one later than the grace as missed)
    missed = {(m["job"], round(m["run_time"], 3)) for m in db.missed.find()}
    skipped = {(m["job"], round(m["run_time"], 3)) for m in db.skipped.find()}
    window_end = stopping - 3
    for group, (grace, coalesce) in GROUPS.items():
        for index in range(3):
            job_id = f"{group}-{index}"
            accounted = [t for job, t in {*executed, *missed, *skipped} if job == job_id]
            fire_time = start.timestamp()
            while fire_time < window_end:
                key = (job_id, round(fire_time, 3))
                if key not in executed and key not in skipped:
                    if grace is None:
                        assert key not in missed, (job_id, "missed without a grace time")
                    # coalescing: found late together with later fire times, merged into one run at
                    # the latest, which runs, or is reported missed or skipped itself (APScheduler
                    # reports no miss for the merged ones; a takeover reports the late ones)
                    merged = coalesce and any(later > fire_time for later in accounted)
                    assert key in missed or merged, (job_id, fire_time - start.timestamp(), "silently lost")
                fire_time += 1


def test_registration_at_every_worker_start_survives_a_kill_and_a_reload(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    """As a web app under gunicorn: every worker registers the same five jobs with fixed ids at
    start (add_job(..., replace_existing=True)). A worker is SIGKILLed and replaced, another is
    reloaded gracefully (SIGTERM, then a new one): the schedule the first worker registered stands,
    every fire time runs, and the killed worker's runs in flight run again elsewhere."""
    db = mongo_client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    options = ("--register", "5", "--interval", "1", "--work", "0.3")
    workers = [worker(mongodb_uri, database, 16, *options) for _ in range(3)]
    for process in workers:
        assert process.stdout is not None and process.stdout.readline().strip() == "started"
    first = {d["_id"]: d["next_run_time"] for d in db.jobs.find({}, ["next_run_time"])}
    assert sorted(first) == [f"reg{index:02}" for index in range(5)]
    began = time.time()

    time.sleep(3.2)
    victim = workers[0]
    me = f":{victim.pid}"
    held, killed_at = kill_holding_a_run(db, victim)
    workers.append(worker(mongodb_uri, database, 16 - (time.time() - began), *options))  # its replacement
    time.sleep(3)
    workers[1].send_signal(signal.SIGTERM)  # a graceful reload: stop (waiting for its runs), then a new one
    workers[1].communicate(timeout=30)
    workers.append(worker(mongodb_uri, database, 16 - (time.time() - began), *options))
    for process in workers:
        process.communicate(timeout=60)
    stopping = began + 16 - 3
    assert [process.returncode for process in workers] == [-signal.SIGKILL, 0, 0, 0, 0]

    executions = list(db.executions.find())
    done = {(e["job"], round(e["run_time"], 3)) for e in executions}
    for job_id, first_time in first.items():  # the first registration's schedule, every fire time run
        fire_time = first_time
        assert all(abs((e["run_time"] - first_time) - round(e["run_time"] - first_time)) < 1e-3
                   for e in executions if e["job"] == job_id)  # fmt: skip
        while fire_time < stopping:
            assert (job_id, round(fire_time, 3)) in done, (job_id, fire_time - began)
            fire_time += 1
    held = in_flight(db, victim.pid, held)  # the victim's own last writes may have landed after the kill
    assert any(not finished for _, _, finished in held), ("the killed worker held no run in flight", held)
    runs = executions + list(db.duplicates.find())  # a second run of a fire time is recorded there
    for job_id, fire_time, finished in held:
        if finished:  # its release may have landed: a second run is allowed, not required
            continue
        elsewhere = [e for e in runs if not e["by"].endswith(me)]
        again = [
            e["at"] - 0.3 - killed_at for e in elsewhere if (e["job"], e["run_time"]) == (job_id, fire_time)
        ]
        # within seconds, not after the lease (30 s); the 3 s goal is the benchmark's to measure
        assert any(started <= 10.0 for started in again), (job_id, fire_time - killed_at, again)
    # the at-least-once window: a takeover runs again every fire time from the earliest the killed
    # worker had going on (its lease's pending one) up to the kill
    duplicates = {(d["job"], d["run_time"]) for d in db.duplicates.find()}
    assert all(any(job == job_id and fire_time - 1e-6 <= t <= killed_at for job_id, fire_time, _ in held)
               for job, t in duplicates), (duplicates, held)  # fmt: skip


#: name -> (seconds since the first fire time when the holder starts, seconds each run takes,
#: fire times the holder must have submitted when it is killed)
ABANDONED = {
    "found late: one pass submits four": (3.0, 1.5, 4),
    "runs longer than the interval: two overlap": (-1.0, 2.5, 2),
}


@pytest.mark.parametrize("case", list(ABANDONED))
def test_every_fire_time_a_killed_holder_was_running_runs_elsewhere(
    case: str, mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    """A job that does not coalesce, with several fire times going on in one process when it is
    killed, none of them finished: found late, one pass submits them all (its executor runs them
    one after another); or each run lasts longer than the interval, so the next claim comes while
    the first still runs. Whoever takes over runs every one of them, not only the latest: the lease
    says the earliest going on."""
    late, work_seconds, submitted = ABANDONED[case]
    db, store, setup = prepare(mongo_client, database)
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=late)
    trigger = IntervalTrigger(seconds=1, start_date=start)
    store.add_job(make_job(setup, "job", func=work, args=(work_seconds,), trigger=trigger,
                           next_run_time=start, misfire_grace_time=None, coalesce=False,
                           max_instances=10))  # fmt: skip
    after_submitted = start.timestamp() + submitted

    def written_back() -> bool:
        document = db.jobs.find_one({"_id": "job", "lease.pending": {"$exists": True}})
        return document is not None and document["next_run_time"] >= after_submitted

    victim = worker(mongodb_uri, database, 60)
    assert victim.stdout is not None and victim.stdout.readline().strip() == "started"
    assert wait_for(written_back, timeout=15)
    victim.send_signal(signal.SIGSTOP)
    held = db.jobs.find_one({"_id": "job"})
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert db.executions.count_documents({}) == 0, "killed too late: a run finished"
    abandoned = [start.timestamp() + k for k in range(round(held["next_run_time"] - start.timestamp()))]
    assert len(abandoned) >= submitted and held["lease"]["pending"] == abandoned[0], (
        abandoned,
        held["lease"],
    )

    survivor = worker(mongodb_uri, database, 40)
    assert survivor.stdout is not None and survivor.stdout.readline().strip() == "started"
    ran = lambda: {e["run_time"] for e in db.executions.find({"job": "job"})}  # noqa: E731
    try:
        assert wait_for(lambda: set(abandoned) <= ran(), timeout=30), (abandoned, sorted(ran()))
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.communicate(timeout=30)
