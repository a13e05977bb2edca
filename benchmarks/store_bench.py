"""Store level and scaling: jobshelf against the stock MongoDBJobStore on the same server."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import datetime_to_utc_timestamp
from bson.binary import Binary
from pymongo import MongoClient

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD

from .jobs import START, make_jobs
from .timing import Sample

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


def _timed(func: Callable[[], Any], calls: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        func()
    return (time.perf_counter() - start) / calls


def _one_round(store: Any, jobs: list[Job], query_calls: int) -> dict[str, float]:
    store.remove_all_jobs()
    now = START + dt.timedelta(minutes=DUE - 1)
    result = {
        "add_job": _timed(lambda: [store.add_job(job) for job in jobs]) / len(jobs),
        "update_job": _timed(lambda: [store.update_job(job) for job in jobs]) / len(jobs),
        "lookup_job": _timed(lambda: [store.lookup_job(job.id) for job in jobs]) / len(jobs),
        "get_due_jobs": _timed(lambda: store.get_due_jobs(now), query_calls),
        "get_all_jobs": _timed(store.get_all_jobs, query_calls),
        "get_next_run_time": _timed(store.get_next_run_time, query_calls),
    }
    assert len(store.get_due_jobs(now)) == DUE
    return result


def run_store(
    uri: str,
    *,
    serializers: list[str],
    jobs_count: int,
    rounds: int,
    query_calls: int,
    progress: Callable[[], None],
) -> dict[str, dict[str, Sample]]:
    """Every operation for every store, interleaved: each round visits the stores in turn."""
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_bench_{uuid.uuid4().hex[:8]}"
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    try:
        stores = _stores(client, database, serializers)
        for alias, store in stores.items():
            store.start(scheduler, alias)
        jobs = workload(jobs_count, scheduler)
        names = list(stores)
        for name in names:  # warm-up
            _one_round(stores[name], jobs, 1)
        samples = {name: {op: Sample() for op in OPERATIONS} for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                for op, seconds in _one_round(stores[name], jobs, query_calls).items():
                    samples[name][op].values.append(seconds)
                progress()
        return samples
    finally:
        client.drop_database(database)
        client.close()


def _fill(store: Any, jobs: list[Job], encode: Callable[[Job], Any], tagged: bool) -> None:
    documents = []
    for job in jobs:
        document = {
            "_id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": encode(job),
        }
        if tagged:
            document[FORMAT_FIELD] = store.format
        documents.append(document)
    for start in range(0, len(documents), 1000):
        store.collection.insert_many(documents[start : start + 1000], ordered=False)


def run_scaling(uri: str, sizes: list[int], rounds: int, progress: Callable[[], None]) -> dict[str, Any]:
    """get_next_run_time and get_due_jobs(k fixed) at each collection size, stock and jobshelf."""
    import pickle

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
            _fill(
                stock,
                jobs,
                lambda job: Binary(pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)),
                False,
            )
            _fill(ours, jobs, lambda job, codec=ours._codec: Binary(codec.encode(job)), True)
            for name, store in stores.items():
                store.get_next_run_time()
                store.get_due_jobs(now)
                next_sample, due_sample = Sample(), Sample()
                for _ in range(rounds):
                    next_sample.values.append(_timed(store.get_next_run_time))
                    due_sample.values.append(_timed(lambda store=store: store.get_due_jobs(now)))
                    progress()
                results.setdefault(name, {})[size] = {
                    "get_next_run_time": next_sample,
                    "get_due_jobs": due_sample,
                }
            for store in stores.values():
                store.collection.drop()
        return results
    finally:
        client.drop_database(database)
        client.close()
