"""Shared scheduling: real scheduler processes on one store (tests/shared_worker.py).

On the same server and jobs, for the single-scheduler store and for 1, 2 and 4 shared processes:

- **cost**: fire times, duplicates, misses, lateness percentiles, loop time, and the server
  commands sent per fire time (pymongo's command monitoring in each worker; ``hello``, ``ping``
  and the like left out), against the single store;
- **throughput**: jobs that sleep (no CPU) and more work than one process's executor can start at
  once: fire times completed per second and lateness for 1, 2 and 4 processes;
- **spread**: three processes, twelve one-second jobs of 0.4 s with APScheduler's default job
  options: the share of the busiest process.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Optional

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import ASCENDING, MongoClient
from tests.helpers import make_job
from tests.shared_worker import work

from jobshelf import MongoDBJobStore

#: (label, processes, mode)
CONFIGS = [("single store", 1, "plain"), ("shared x1", 1, "shared"), ("shared x2", 2, "shared"),
           ("shared x4", 4, "shared")]  # fmt: skip
STARTUP = 5.0  # seconds for the processes to start before the first fire time
WARMUP = 2.0  # the first seconds of fire times are not measured (a process may still be starting)
#: Goals (issue 16): shared mode's cost per fire time and per loop against the single store, p99
#: lateness of four processes against the single store's, the busiest of three processes' share.
GOALS = {"commands per fire time": 1.3, "loop time": 1.3, "p99 lateness x4": 2.0, "busiest share": 0.45}
#: Starts a fresh server and yields its URI (``tests.servers.secantus_process``, ``nx_server``).
Fresh = Optional[Callable[[], AbstractContextManager[str]]]


def run_cluster(
    uri: str,
    processes: int,
    mode: str,
    *,
    jobs: int,
    interval: float,
    seconds: float,
    work_seconds: float = 0.0,
    apscheduler_defaults: bool = False,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """One run: ``jobs`` interval jobs every ``interval`` s for ``seconds`` s on ``processes``
    schedulers, each run sleeping ``work_seconds``; fire times in the first ``warmup`` seconds are
    not measured."""
    client: MongoClient[Any] = MongoClient(uri)
    database = f"jobshelf_shared_{uuid.uuid4().hex[:8]}"
    db = client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    try:
        store = MongoDBJobStore(database=database, client=client)
        setup = BackgroundScheduler(timezone=dt.timezone.utc)
        store.start(setup, "setup")
        start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=STARTUP)
        options = (
            {}
            if apscheduler_defaults
            else {"misfire_grace_time": None, "coalesce": False, "max_instances": 5}
        )
        for index in range(jobs):
            trigger = IntervalTrigger(seconds=interval, start_date=start)
            store.add_job(make_job(setup, f"job{index:03}", func=work, args=(work_seconds,), trigger=trigger,
                                   next_run_time=start, **{"misfire_grace_time": 1, "coalesce": True,
                                                           "max_instances": 1, **options}))  # fmt: skip
        command = [
            sys.executable,
            "-m",
            "tests.shared_worker",
            uri,
            database,
            str(STARTUP + seconds + 1),
            "30",
            mode,
        ]
        if apscheduler_defaults:
            command.append("--apscheduler-defaults")
        workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(processes)]
        for worker in workers:
            worker.wait(STARTUP + seconds + 120)
        window_end = start.timestamp() + seconds
        first = int(warmup / interval)
        expected = {(f"job{index:03}", round(start.timestamp() + k * interval, 3))
                    for index in range(jobs) for k in range(first, int(seconds / interval))}  # fmt: skip
        executed = {(e["job"], round(e["run_time"], 3)): e for e in db.executions.find()}
        in_window = [e for key, e in executed.items() if key in expected]
        lateness = sorted(e["at"] - e["run_time"] - work_seconds for e in in_window)
        loops = [value for doc in db.loops.find() for value in doc["seconds"]]
        commands: collections.Counter[str] = collections.Counter()
        for doc in db.loops.find():
            commands.update(doc.get("commands", {}))
        by_process = collections.Counter(e["by"] for e in in_window)
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
            # fire times completed while the window lasted (runs queued and drained at shutdown
            # are executed, not counted as throughput)
            "throughput": sum(1 for e in in_window if e["at"] <= window_end) / (seconds - first * interval),
            "loop_median": statistics.median(loops) if loops else float("nan"),
            "loops": len(loops),
            "commands": dict(commands),
            "commands_per_fire_time": sum(commands.values()) / max(1, len(executed)),
            "busiest_share": max(by_process.values()) / len(in_window) if in_window else float("nan"),
            "exit_codes": [worker.returncode for worker in workers],
        }
    finally:
        client.drop_database(database)
        client.close()


def run_failover(uri: str, *, rounds: int = 3) -> dict[str, Any]:
    """Three processes, twelve one-second jobs of 0.4 s, the default lease (30 s): one process is
    SIGKILLed while it has runs in flight; how long until each of those jobs runs again on another
    process (a run started after the kill: its fire time again, or a later one it was merged into)."""
    delays: list[float] = []
    for _ in range(rounds):
        client: MongoClient[Any] = MongoClient(uri)
        database = f"jobshelf_failover_{uuid.uuid4().hex[:8]}"
        db = client[database]
        db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
        try:
            command = [sys.executable, "-m", "tests.shared_worker", uri, database, "14", "30", "shared"]
            workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(3)]
            for worker in workers:
                assert worker.stdout is not None
                worker.stdout.readline()  # "started"
            store = MongoDBJobStore(database=database, client=client)
            setup = BackgroundScheduler(timezone=dt.timezone.utc)
            store.start(setup, "setup")
            start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=2)
            for index in range(12):
                trigger = IntervalTrigger(seconds=1, start_date=start)
                job = make_job(setup, f"job{index:03}", func=work, args=(0.4,), trigger=trigger,
                               next_run_time=start, misfire_grace_time=None, max_instances=1)  # fmt: skip
                store.add_job(job)
            time.sleep(max(0.0, start.timestamp() + 4.2 - time.time()))
            victim, held = workers[0], []
            for _ in range(40):  # kill it while it has runs in flight
                victim.send_signal(signal.SIGSTOP)
                mine = {"lease.holder": {"$regex": f":{victim.pid}:"}}
                held = [document["_id"] for document in db.jobs.find(mine, ["_id"])]
                if held:
                    break
                victim.send_signal(signal.SIGCONT)
                time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            for worker in workers:
                worker.wait(60)
            runs = [*db.executions.find(), *db.duplicates.find()]
            for job_id in held:
                again = [e["at"] - 0.4 for e in runs if e["job"] == job_id and e["at"] - 0.4 > killed_at]
                delays.append(min(again, default=float("inf")) - killed_at)
        finally:
            client.drop_database(database)
            client.close()
    delays.sort()
    return {
        "delays": delays,
        "median": _percentile(delays, 0.5),
        "max": delays[-1] if delays else float("nan"),
    }


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def run(uri: str, *, quick: bool, progress: Any, fresh: Fresh = None) -> dict[str, Any]:
    """Every configuration, in turn, on the same workload: on the server at ``uri`` or, with
    ``fresh``, each on a fresh server of its own (so that no configuration runs on a server the
    earlier ones have filled and slowed down)."""

    def server() -> AbstractContextManager[str]:
        return fresh() if fresh is not None else contextlib.nullcontext(uri)

    jobs, interval, seconds = (8, 0.5, 6.0) if quick else (20, 1.0, 60.0)
    results = {}
    for label, processes, mode in CONFIGS:
        with server() as at:
            results[label] = run_cluster(at, processes, mode, jobs=jobs, interval=interval, seconds=seconds,
                                         warmup=WARMUP)  # fmt: skip
        progress()
    # throughput: more sleeping work than one executor (10 threads) starts at once
    busy = {"jobs": 16, "interval": 1.0, "seconds": 6.0, "work": 0.3} if quick else \
        {"jobs": 40, "interval": 1.0, "seconds": 30.0, "work": 0.5}  # fmt: skip
    throughput = {}
    for label, processes, mode in CONFIGS:
        with server() as at:
            throughput[label] = run_cluster(
                at, processes, mode, jobs=int(busy["jobs"]), interval=busy["interval"],
                seconds=busy["seconds"], work_seconds=busy["work"], warmup=WARMUP,
            )  # fmt: skip
    with server() as at:
        failover = run_failover(at, rounds=1 if quick else 3)
    with server() as at:
        spread = run_cluster(at, 3, "shared", jobs=12, interval=1.0, seconds=6.0 if quick else 30.0,
                             work_seconds=0.4, apscheduler_defaults=True, warmup=WARMUP)  # fmt: skip
    plain, shared = results["single store"], results["shared x1"]
    return {
        "workload": {"jobs": jobs, "interval": interval, "seconds": seconds},
        "runs": results,
        "throughput_workload": busy,
        "throughput": throughput,
        "spread": spread,
        "failover": failover,
        "loop_cost_ratio": _ratio(shared["loop_median"], plain["loop_median"]),
        "commands_ratio": _ratio(shared["commands_per_fire_time"], plain["commands_per_fire_time"]),
        "p99_ratio": _ratio(results["shared x4"]["lateness_p99"], plain["lateness_p99"]),
    }


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def render(shared: dict[str, Any]) -> str:
    work = shared["workload"]
    lines = [
        f"Shared scheduling: {work['jobs']} interval jobs every {work['interval']} s "
        f"for {work['seconds']:.0f} s (real BackgroundScheduler processes)",
        "",
        *_HEADER,
    ]
    for label, run in shared["runs"].items():
        lines.append(_row(label, run))
    ratio = shared["loop_cost_ratio"]
    lines += ["", f"shared mode per scheduler loop, one process: {ratio:.2f}x the single-scheduler store"]
    if "commands_ratio" in shared:
        lines += [
            f"server commands per fire time, one process: {shared['commands_ratio']:.2f}x the single store "
            f"(goal <= {GOALS['commands per fire time']}x)",
            f"p99 lateness, four processes: {shared['p99_ratio']:.2f}x the single store's "
            f"(goal <= {GOALS['p99 lateness x4']}x)",
        ]
    if "throughput" in shared:
        busy = shared["throughput_workload"]
        lines += [
            "",
            f"Throughput: {busy['jobs']} jobs every {busy['interval']} s, each sleeping {busy['work']} s "
            f"(more than one executor's 10 threads start at once), {busy['seconds']:.0f} s",
            "",
            *_HEADER,
        ]
        lines += [_row(label, run) for label, run in shared["throughput"].items()]
    if "spread" in shared:
        spread = shared["spread"]
        lines += [
            "",
            f"Spread: 3 processes, 12 one-second jobs of 0.4 s, APScheduler's default job options: the "
            f"busiest process ran {spread['busiest_share']:.0%} of {spread['executed']} fire times "
            f"(goal <= {GOALS['busiest share']:.0%}), {spread['misses']} missed, "
            f"{spread['duplicates']} duplicates, lateness p99 {spread['lateness_p99'] * 1000:.0f} ms",
        ]
    if "failover" in shared:
        failover = shared["failover"]
        lines += [
            "",
            f"Failover: 3 processes, 12 one-second jobs of 0.4 s, default lease (30 s), one SIGKILLed with "
            f"runs in flight: its jobs ran again elsewhere after {failover['median']:.1f} s (median of "
            f"{len(failover['delays'])}), {failover['max']:.1f} s at most (goal <= 3 s)",
        ]
    return "\n".join(lines)


_HEADER = [
    "| store | processes | fire times | executed | duplicates | misses | lateness p50 / p99 / max (ms) "
    "| throughput (fires/s) | loop median (ms) | commands per fire time |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def _row(label: str, run: dict[str, Any]) -> str:
    return (
        f"| {label} | {run['processes']} | {run['fire_times']} | {run['executed']} | {run['duplicates']} "
        f"| {run['misses']} | {run['lateness_p50'] * 1000:.0f} / {run['lateness_p99'] * 1000:.0f} / "
        f"{run['lateness_max'] * 1000:.0f} | {run['throughput']:.1f} | {run['loop_median'] * 1000:.1f} "
        f"| {run.get('commands_per_fire_time', float('nan')):.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.shared_bench [--quick] [--server nx]``: this part alone, each
    configuration on a fresh server in a process of its own."""
    import argparse

    from tests import servers

    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", choices=["secantus", "nx"], default="secantus")
    args = parser.parse_args(argv)
    fresh = servers.nx_server if args.server == "nx" else servers.secantus_process
    started = time.monotonic()
    print(render(run("", quick=args.quick, progress=lambda: None, fresh=fresh)))
    print(f"\n({args.server}, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
