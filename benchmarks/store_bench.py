"""Store level and scaling: jobshelf against the stock MongoDBJobStore on the same server."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .jobs import START, make_jobs
from .timing import Sample, time_per_call

STOCK = "stock"
OPERATIONS = ("add_job", "update_job", "lookup_job", "get_due_jobs", "get_all_jobs", "get_next_run_time")
DUE = 10  # get_due_jobs(now) returns this many jobs


def _stores(client: MongoClient[Any], database: str, serializers: list[str]) -> dict[str, Any]:
    stores: dict[str, Any] = {STOCK: StockStore(database=database, collection="stock", client=client)}
    for name in serializers:
        stores[f"jobshelf-{name}"] = MongoDBJobStore(
            database=database, collection=f"jobshelf_{name}", client=client, serializer=name
        )
    return stores


def workload(count: int, scheduler: BackgroundScheduler) -> list[Job]:
    """``count`` jobs cycling through the mix, one minute apart, unique ids."""
    mix = list(make_jobs(scheduler).values())
    jobs = []
    for index in range(count):
        template = mix[index % len(mix)]
        state = template.__getstate__()
        state.update(id=f"{index:06d}", next_run_time=START + dt.timedelta(minutes=index))
        job = Job.__new__(Job)
        job.__setstate__(state)
        job._scheduler = scheduler
        jobs.append(job)
    return jobs


def _advanced(job: Job) -> Job:
    """The job with its next run time changed, as every update by APScheduler's loop changes it.

    Re-writing an identical job would measure nothing: some servers (SecantusDB) skip a write that
    changes nothing. The time alternates by a microsecond, so the set of due jobs stays the same.
    """
    if job.next_run_time is not None:
        step = dt.timedelta(microseconds=-1 if job.next_run_time.microsecond % 2 == 0 else 1)  # never later
        job._modify(next_run_time=job.next_run_time + step)
    return job


_PER_JOB: dict[str, Callable[[Any, Job], Any]] = {
    "add_job": lambda store, job: store.add_job(job),
    "update_job": lambda store, job: store.update_job(_advanced(job)),
    "lookup_job": lambda store, job: store.lookup_job(job.id),
}
_QUERIES: dict[str, Callable[[Any, dt.datetime], Any]] = {
    "get_due_jobs": lambda store, now: store.get_due_jobs(now),
    "get_all_jobs": lambda store, now: store.get_all_jobs(),
    "get_next_run_time": lambda store, now: store.get_next_run_time(),
}


def _one_round(
    stores: dict[str, Any], order: list[str], jobs: list[Job], query_calls: int
) -> dict[str, dict[str, float]]:
    """Seconds per call of every operation for every store, alternating stores call by call."""
    now = START + dt.timedelta(minutes=DUE - 1)
    totals = {name: dict.fromkeys(OPERATIONS, 0.0) for name in order}
    for name in order:
        stores[name].remove_all_jobs()
    for op, per_job in _PER_JOB.items():
        for job in jobs:
            for name in order:
                store = stores[name]
                totals[name][op] += time_per_call(lambda f=per_job, s=store, j=job: f(s, j), 1) / len(jobs)
    for op, query in _QUERIES.items():
        for _ in range(query_calls):
            for name in order:
                store = stores[name]
                totals[name][op] += time_per_call(lambda q=query, s=store: q(s, now), 1) / query_calls
    for name in order:
        assert len(stores[name].get_due_jobs(now)) == DUE
    return totals


def run_store(
    uri: str,
    *,
    serializers: list[str],
    jobs_count: int,
    rounds: int,
    query_calls: int,
    progress: Callable[[], None],
) -> dict[str, dict[str, Sample]]:
    """Every operation for every store on the same server, alternating stores call by call."""
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_bench_{uuid.uuid4().hex[:8]}"
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    try:
        stores = _stores(client, database, serializers)
        for alias, store in stores.items():
            store.start(scheduler, alias)
        jobs = workload(jobs_count, scheduler)
        names = list(stores)
        _one_round(stores, names, jobs, 1)  # warm-up
        samples = {name: {op: Sample() for op in OPERATIONS} for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name, per_op in _one_round(stores, names[shift:] + names[:shift], jobs, query_calls).items():
                for op, seconds in per_op.items():
                    samples[name][op].values.append(seconds)
            for _ in names:
                progress()
        return samples
    finally:
        client.drop_database(database)
        client.close()


def _fill(store: Any, jobs: list[Job]) -> None:
    """Through the store's own add_job, as an application writes."""
    for job in jobs:
        store.add_job(job)


def run_scaling(uri: str, sizes: list[int], rounds: int, progress: Callable[[], None]) -> dict[str, Any]:
    """get_next_run_time and get_due_jobs(k fixed) at each collection size, stock and jobshelf."""
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_scale_{uuid.uuid4().hex[:8]}"
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    results: dict[str, Any] = {}
    now = START + dt.timedelta(minutes=DUE - 1)
    try:
        for size in sizes:
            jobs = workload(size, scheduler)
            stores = _stores(client, database, ["pickle"])
            for alias, store in stores.items():
                store.collection.drop()
                store.start(scheduler, alias)
            stock, ours = stores[STOCK], stores["jobshelf-pickle"]
            _fill(stock, jobs)
            _fill(ours, jobs)
            names = list(stores)
            for store in stores.values():  # warm-up
                store.get_next_run_time()
                store.get_due_jobs(now)
            per_size = {name: {"get_next_run_time": Sample(), "get_due_jobs": Sample()} for name in names}
            for round_index in range(rounds):
                order = names[round_index % 2 :] + names[: round_index % 2]
                for op, query in (
                    ("get_next_run_time", _QUERIES["get_next_run_time"]),
                    ("get_due_jobs", _QUERIES["get_due_jobs"]),
                ):
                    for name in order:
                        store = stores[name]
                        per_size[name][op].values.append(time_per_call(lambda q=query, s=store: q(s, now), 1))
                progress()
                progress()
            for name in names:
                results.setdefault(name, {})[size] = per_size[name]
            for store in stores.values():
                store.collection.drop()
        return results
    finally:
        client.drop_database(database)
        client.close()
