"""Execution history: the scheduler loop's cost with ``history=True`` against history off.

One real ``BackgroundScheduler`` per run, on the same server and jobs: ``jobs`` interval jobs that
fire together every ``interval`` s for ``seconds`` s. Each pass of APScheduler's own loop
(``_process_jobs``) that submitted jobs is timed, with the number it submitted; the cost is the
busy passes' time per submitted fire time: wall-clock time (what the scheduler waits, the database
included) and the loop thread's own CPU time (what history adds to the loop itself). The server
commands are counted too (a ``CommandListener``), by the thread that sent them: the loop's, and
the history writer's; they do not depend on the machine's load. Runs with history on and off
alternate, round by round, each on a fresh database. With history on, every record must be in the
database at the end.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient, monitoring

from jobshelf import MongoDBJobStore

LABEL = "history on per loop"
TARGET = 1.1
MODES = ("off", "on")
_HANDSHAKES = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions", "buildinfo", "buildInfo"})


class CommandCounter(monitoring.CommandListener):  # type: ignore[misc]
    """Server commands by the kind of thread that sent them (``loop``, ``history``, ``other``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self, event: Any) -> None:
        if event.command_name in _HANDSHAKES:
            return
        name = threading.current_thread().name
        kind = "other"
        if name == "APScheduler":
            kind = "loop"
        elif name.startswith("jobshelf-history"):
            kind = "history"
        with self._lock:
            self.counts[kind] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def work() -> None:
    """The job: nothing; its fire time is what the loop handles."""


class PassTimer(BackgroundScheduler):  # type: ignore[misc]
    """Times each pass of APScheduler's loop and counts the fire times it submitted."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.passes: list[tuple[float, float, int]] = []  # wall seconds, CPU seconds, fire times
        self._submitted = 0
        self.add_listener(self._count, EVENT_JOB_SUBMITTED)  # dispatched inside the pass

    def _count(self, event: Any) -> None:
        self._submitted += len(event.scheduled_run_times)

    def _process_jobs(self) -> Any:
        self._submitted = 0
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return super()._process_jobs()
        finally:
            self.passes.append((time.perf_counter() - started, time.thread_time() - cpu, self._submitted))


def run_once(uri: str, history: bool, *, jobs: int, interval: float, seconds: float) -> dict[str, Any]:
    """One scheduler, ``jobs`` jobs, history on or off: busy passes, their time, records written."""
    counter = CommandCounter()
    client: MongoClient[Any] = MongoClient(uri, event_listeners=[counter])
    database = f"jobshelf_history_{uuid.uuid4().hex[:8]}"
    try:
        store = MongoDBJobStore(database=database, client=client, history=history)
        scheduler = PassTimer(
            timezone=dt.timezone.utc, jobstores={"default": store},
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 5},
        )  # fmt: skip
        scheduler.start()
        start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        end = start + dt.timedelta(seconds=seconds - interval / 2)
        for index in range(jobs):
            trigger = IntervalTrigger(seconds=interval, start_date=start, end_date=end)
            scheduler.add_job(work, trigger, id=f"job{index:03}")
        time.sleep(1 + seconds + 0.5)
        scheduler.shutdown(wait=True)  # with history on: the last records are written
        commands = dict(counter.counts)
        busy = [(wall, cpu, count) for wall, cpu, count in scheduler.passes if count]
        submitted = sum(count for _, _, count in busy)
        recorded = client[database][f"{store.collection.name}_runs"].count_documents({}) if history else None
        return {
            "busy_passes": len(busy),
            "submitted": submitted,
            "busy_seconds": sum(wall for wall, _, _ in busy),
            "busy_cpu_seconds": sum(cpu for _, cpu, _ in busy),
            "pass_median": statistics.median(wall for wall, _, _ in busy) if busy else float("nan"),
            "recorded": recorded,
            "dropped": store.history_dropped,
            "loop_commands": commands.get("loop", 0),
            "history_commands": commands.get("history", 0),
        }
    finally:
        client.drop_database(database)
        client.close()


def run(uri: str, *, quick: bool, rounds: int, progress: Any) -> dict[str, Any]:
    """Alternate history off and on for ``rounds`` rounds; the ratio of the medians per fire time."""
    jobs, interval, seconds = (10, 0.5, 3.0) if quick else (20, 0.5, 8.0)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_index in range(rounds):
        order = MODES if round_index % 2 == 0 else MODES[::-1]
        for mode in order:
            result = run_once(uri, mode == "on", jobs=jobs, interval=interval, seconds=seconds)
            runs[mode].append(result)
            progress()
    def per_fire_time(key: str) -> dict[str, float]:
        return {
            mode: statistics.median(r[key] / r["submitted"] for r in results if r["submitted"])
            for mode, results in runs.items()
        }

    per_fire, per_fire_cpu = per_fire_time("busy_seconds"), per_fire_time("busy_cpu_seconds")
    commands = {key: per_fire_time(key) for key in ("loop_commands", "history_commands")}
    best = {mode: min(r["busy_seconds"] / r["submitted"] for r in results if r["submitted"])
            for mode, results in runs.items()}  # fmt: skip
    per_pass = {mode: statistics.median(r["pass_median"] for r in results) for mode, results in runs.items()}
    return {
        "workload": {"jobs": jobs, "interval": interval, "seconds": seconds, "rounds": rounds},
        "runs": runs,
        "per_fire_time": per_fire,
        "per_fire_time_cpu": per_fire_cpu,
        "per_fire_time_best": best,
        "commands_per_fire_time": commands,
        "per_pass": per_pass,
        "ratio": per_fire["on"] / per_fire["off"] if per_fire["off"] else float("nan"),
        "cpu_ratio": per_fire_cpu["on"] / per_fire_cpu["off"] if per_fire_cpu["off"] else float("nan"),
        "best_ratio": best["on"] / best["off"] if best["off"] else float("nan"),
        "records_complete": all(r["recorded"] == r["submitted"] for r in runs["on"]),
    }


def render(history: dict[str, Any]) -> str:
    work = history["workload"]
    lines = [
        f"Execution history: one scheduler, {work['jobs']} interval jobs every {work['interval']} s for "
        f"{work['seconds']:.0f} s, history off and on alternating ({work['rounds']} rounds each)",
        "",
        "| history | busy loop passes | fire times | per fire time, wall: median / best (µs) "
        "| per fire time, loop CPU (µs) | loop commands per fire time | history commands per fire time "
        "| busy pass median (ms) | recorded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        results = history["runs"][mode]
        recorded = sum(r["recorded"] or 0 for r in results) if mode == "on" else "-"
        lines.append(
            f"| {mode} | {sum(r['busy_passes'] for r in results)} | {sum(r['submitted'] for r in results)} "
            f"| {history['per_fire_time'][mode] * 1e6:.0f} / {history['per_fire_time_best'][mode] * 1e6:.0f} "
            f"| {history['per_fire_time_cpu'][mode] * 1e6:.0f} "
            f"| {history['commands_per_fire_time']['loop_commands'][mode]:.3f} "
            f"| {history['commands_per_fire_time']['history_commands'][mode]:.3f} "
            f"| {history['per_pass'][mode] * 1000:.2f} "
            f"| {recorded} |"
        )
    complete = "every fire time recorded" if history["records_complete"] else "RECORDS MISSING"
    lines += ["", f"history on: {history['ratio']:.2f}x the loop's wall-clock time per fire time with "
              f"history off (median of runs; best runs {history['best_ratio']:.2f}x), "
              f"{history['cpu_ratio']:.2f}x its CPU time ({complete})"]
    return "\n".join(lines)


def section(history: dict[str, Any] | None, checks: list[tuple[str, float, float]]) -> str:
    """The report's section (empty when the part did not run); its target joins ``checks``."""
    if history is None:
        return ""
    checks.append((LABEL, history["ratio"], TARGET))
    return "\n\n" + render(history)
