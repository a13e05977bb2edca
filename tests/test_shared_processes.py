"""Shared mode as web apps run it (issue 16), with real processes (tests/shared_worker.py):
a store built before a fork, takeover of a killed holder's jobs within seconds, the work spread
over the processes, every miss reported, registration at every worker start.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import ASCENDING, MongoClient

from jobshelf import MongoDBJobStore

from .helpers import UTC, make_job
from .shared_worker import work

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
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.shared_worker",
            uri,
            database,
            str(seconds),
            str(lease),
            "shared",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expected_fire_times(count: int, start: float, interval: float, until: float) -> set[tuple[str, float]]:
    fire_times = set()
    for index in range(count):
        fire_time = start
        while fire_time < until:
            fire_times.add((f"job{index:02}", round(fire_time, 3)))
            fire_time += interval
    return fire_times


@pytest.mark.parametrize("client_before_fork", [False, True], ids=["store's own client", "client passed in"])
def test_a_store_built_before_a_fork_runs_each_fire_time_once_in_its_children(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str, client_before_fork: bool
) -> None:
    db, store, setup = prepare(mongo_client, database)
    start = dt.datetime.now(UTC) + dt.timedelta(seconds=2.5)
    add_interval_jobs(store, setup, 8, 0.5, start)
    options = ["--forks", "3", *(["--client-before-fork"] if client_before_fork else [])]
    parent = worker(mongodb_uri, database, 6, *options)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err[-3000:]
    assert "children [0, 0, 0]" in out

    assert db.duplicates.count_documents({}) == 0, list(db.duplicates.find())
    executions = list(db.executions.find())
    seen = {(e["job"], round(e["run_time"], 3)) for e in executions}
    missing = expected_fire_times(8, start.timestamp(), 0.5, start.timestamp() + 2.5) - seen
    assert missing == set()
    by_child = Counter(e["by"] for e in executions)
    assert len(by_child) == 3, by_child  # each child has a holder id of its own, and a share
    if client_before_fork:  # works, and says how to do it properly
        assert err.count("was created in process") == 3 and "post_fork" in err
    else:
        assert "was created in process" not in err
