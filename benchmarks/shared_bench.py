"""Shared scheduling: real scheduler processes on one store (tests/shared_worker.py).

For the single-scheduler store and for 1, 2 and 4 shared processes, on the same server and jobs:
fire times, duplicates, misses, lateness percentiles and throughput; and the cost of shared mode per
scheduler loop on one process, against the single-scheduler store.
"""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import sys
import uuid
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import ASCENDING, MongoClient
from tests.helpers import make_job
from tests.shared_worker import work

from jobshelf import MongoDBJobStore

#: (label, processes, mode)
CONFIGS = [("single store", 1, "plain"), ("shared x1", 1, "shared"), ("shared x2", 2, "shared"),
           ("shared x4", 4, "shared")]  # fmt: skip
STARTUP = 4.0  # seconds for the processes to start before the first fire time


def run_cluster(
    uri: str, processes: int, mode: str, *, jobs: int, interval: float, seconds: float
) -> dict[str, Any]:
    """One run: ``jobs`` interval jobs every ``interval`` s for ``seconds`` s on ``processes`` schedulers."""
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_shared_{uuid.uuid4().hex[:8]}"
    db = client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    try:
        store = MongoDBJobStore(database=database, client=client)
        setup = BackgroundScheduler(timezone=dt.timezone.utc)
        store.start(setup, "setup")
        start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=STARTUP)
        for index in range(jobs):
            trigger = IntervalTrigger(seconds=interval, start_date=start)
            store.add_job(make_job(setup, f"job{index:03}", func=work, trigger=trigger, next_run_time=start,
                                   misfire_grace_time=None, max_instances=5))  # fmt: skip
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.shared_worker",
                    uri,
                    database,
                    str(STARTUP + seconds + 1),
                    "10",  # lease: well above the stalls of a loaded 2-core machine
                    mode,
                ],
                stdout=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        for worker in workers:
            worker.wait(STARTUP + seconds + 120)
        window_end = start.timestamp() + seconds
        expected = {(f"job{index:03}", round(start.timestamp() + k * interval, 3))
                    for index in range(jobs) for k in range(int(seconds / interval))}  # fmt: skip
        executed = {(e["job"], round(e["run_time"], 3)): e for e in db.executions.find()}
        in_window = [e for key, e in executed.items() if key in expected]
        lateness = sorted(e["at"] - e["run_time"] for e in in_window)
        loops = [value for doc in db.loops.find() for value in doc["seconds"]]
        return {
            "processes": processes,
            "mode": mode,
            "fire_times": len(expected),
            "executed": len(in_window),
            "duplicates": db.duplicates.count_documents({"run_time": {"$lt": window_end}}),
            "misses": len(expected - executed.keys()),
            "lateness_p50": _percentile(lateness, 0.50),
            "lateness_p99": _percentile(lateness, 0.99),
            "lateness_max": lateness[-1] if lateness else float("nan"),
            "throughput": len(in_window) / seconds,
            "loop_median": statistics.median(loops) if loops else float("nan"),
            "loops": len(loops),
            "exit_codes": [worker.returncode for worker in workers],
        }
    finally:
        client.drop_database(database)
        client.close()


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def run(uri: str, *, quick: bool, progress: Any) -> dict[str, Any]:
    """Every configuration, in turn, on the same server and workload."""
    # sized to what one 2-core machine sustains with the server in the same process: 60 fires/s
    jobs, interval, seconds = (8, 0.5, 6.0) if quick else (20, 1.0, 60.0)
    results = {}
    for label, processes, mode in CONFIGS:
        results[label] = run_cluster(uri, processes, mode, jobs=jobs, interval=interval, seconds=seconds)
        progress()
    plain, shared = results["single store"]["loop_median"], results["shared x1"]["loop_median"]
    return {"workload": {"jobs": jobs, "interval": interval, "seconds": seconds}, "runs": results,
            "loop_cost_ratio": shared / plain if plain else float("nan")}  # fmt: skip


def render(shared: dict[str, Any]) -> str:
    work = shared["workload"]
    lines = [
        f"Shared scheduling: {work['jobs']} interval jobs every {work['interval']} s "
        f"for {work['seconds']:.0f} s (real BackgroundScheduler processes)",
        "",
        "| store | processes | fire times | executed | duplicates | misses | lateness p50 / p99 / max (ms) "
        "| throughput (fires/s) | loop median (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in shared["runs"].items():
        lines.append(
            f"| {label} | {run['processes']} | {run['fire_times']} | {run['executed']} | {run['duplicates']} "
            f"| {run['misses']} | {run['lateness_p50'] * 1000:.0f} / {run['lateness_p99'] * 1000:.0f} / "
            f"{run['lateness_max'] * 1000:.0f} | {run['throughput']:.1f} | {run['loop_median'] * 1000:.1f} |"
        )
    ratio = shared["loop_cost_ratio"]
    lines += ["", f"shared mode per scheduler loop, one process: {ratio:.2f}x the single-scheduler store"]
    return "\n".join(lines)
