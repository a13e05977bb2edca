"""Cost that follows the due jobs, not the collection: each store operation timed at several
collection sizes with the same ten jobs due now and the rest one minute apart after them (the stock
store, jobshelf, jobshelf in shared mode).

``python -m benchmarks.shared_scaling [--server nx|secantus] [--sizes 2000,20000,100000]``

Operations: ``start`` (a new store instance on the filled collection: indexes, formats,
quarantine count; in shared mode also its check-in), ``get_due_jobs`` (shared mode: the claim pass;
the claims are released afterwards, untimed) and ``get_next_run_time``. Documents are written as
the stock store writes them (untagged pickle), in bulk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pickle
import statistics
import sys
import time
import uuid
from typing import Any

from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from bson.binary import Binary
from pymongo import MongoClient

from jobshelf import MongoDBJobStore

from .jobs import START
from .store_bench import DUE, workload

OPERATIONS = ("start", "get_due_jobs", "get_next_run_time")
STORES = ("stock", "jobshelf", "jobshelf shared")
#: Goal (issue 16): from 2,000 to 20,000 jobs each operation's time grows at most this much.
GROWTH_GOAL = 2.5


def fill(client: MongoClient[Any], database: str, size: int) -> dt.datetime:
    """``size`` jobs one minute apart, the first ``DUE`` due now (as in a live collection: the
    earliest job is soon); returns the time to measure at."""
    collection = client[database].jobs
    collection.drop()
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    now = dt.datetime.now(dt.timezone.utc)
    first = now - dt.timedelta(minutes=DUE - 0.5)
    batch = []
    for job in workload(size, scheduler):
        state = job.__getstate__()
        state["next_run_time"] = first + (job.next_run_time - START)  # the workload's times, moved to now
        data = Binary(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
        batch.append({"_id": job.id, "next_run_time": state["next_run_time"].timestamp(), "job_state": data})
        if len(batch) == 5000:
            collection.insert_many(batch, ordered=False)
            batch = []
    if batch:
        collection.insert_many(batch, ordered=False)
    return now


def _store(name: str, client: MongoClient[Any], database: str) -> Any:
    if name == "stock":
        return StockStore(database=database, client=client)
    return MongoDBJobStore(database=database, client=client, shared=name == "jobshelf shared")


def measure(
    client: MongoClient[Any], database: str, name: str, rounds: int, now: dt.datetime
) -> dict[str, float]:
    """Median seconds per operation for one store kind on the filled collection, at ``now``."""
    times: dict[str, list[float]] = {operation: [] for operation in OPERATIONS}
    for _ in range(rounds):
        scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        store = _store(name, client, database)
        began = time.perf_counter()
        store.start(scheduler, "default")
        times["start"].append(time.perf_counter() - began)
        try:
            began = time.perf_counter()
            due = store.get_due_jobs(now)
            times["get_due_jobs"].append(time.perf_counter() - began)
            assert len(due) == DUE, (name, len(due))
            began = time.perf_counter()
            store.get_next_run_time()
            times["get_next_run_time"].append(time.perf_counter() - began)
            if name == "jobshelf shared":
                for job in due:  # the application's write: releases the claim (untimed)
                    store.update_job(job)
        finally:
            if name != "stock":  # the stock store closes the client it was given
                store.shutdown()
    return {operation: statistics.median(values) for operation, values in times.items()}


def run(uri: str, sizes: list[int], rounds: int) -> dict[str, dict[int, dict[str, float]]]:
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_scaling_{uuid.uuid4().hex[:8]}"
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in STORES}
    try:
        for size in sizes:
            now = fill(client, database, size)
            for name in STORES:
                results[name][size] = measure(client, database, name, rounds, now)
            print(f"  {size} jobs done", file=sys.stderr, flush=True)
    finally:
        client.drop_database(database)
        client.close()
    return results


def render(results: dict[str, dict[int, dict[str, float]]], server: str) -> str:
    sizes = sorted(next(iter(results.values())))
    growth_label = f"growth {sizes[0]:,} -> {sizes[1]:,}" if len(sizes) > 1 else "growth"
    lines = [
        f"Scaling ({server}): ten jobs due, collection of N jobs; median ms per call",
        "",
        "| store | operation | " + " | ".join(f"N={size:,}" for size in sizes) + f" | {growth_label} |",
        "|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for name, per_size in results.items():
        for operation in OPERATIONS:
            values = [per_size[size][operation] for size in sizes]
            growth = values[1] / values[0] if len(values) > 1 and values[0] else float("nan")
            flag = "" if growth <= GROWTH_GOAL else " (goal <= 2.5x)"
            lines.append(f"| {name} | {operation} | " + " | ".join(f"{v * 1000:.1f}" for v in values)
                         + f" | {growth:.1f}x{flag} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tests import servers

    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_scaling", description=__doc__)
    parser.add_argument("--server", choices=["secantus", "nx"], default="nx")
    parser.add_argument("--sizes", default="2000,20000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    context = servers.nx_server if args.server == "nx" else servers.secantus_server
    with context() as uri:
        print(render(run(uri, sizes, args.rounds), args.server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
