"""Shared mode of one :class:`~jobshelf.MongoDBJobStore`: several scheduler processes on one
collection, each fire time run once (see the README's "Shared scheduling").

This module composes the parts, each in its own module:

- :mod:`._leases`: lease values read as untrusted input, and the runs this instance holds;
- :mod:`._claims`: claims, releases and renewals on the job documents;
- :mod:`._liveness`: check-ins, dead holders, and the upkeep thread;
- :mod:`._wakeups`: waking the scheduler when another process makes a job due sooner;
- :mod:`._registration`: registering an unchanged job again keeps its schedule and lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
)
from apscheduler.job import Job

from .._core import Row
from ._claims import ClaimedJob, Claims, LeaseUpkeep
from ._concurrent import LookupMarks
from ._leases import ClaimBook, HolderWrite, WriteMode
from ._liveness import Heartbeat, HolderRegistry, holder_id
from ._registration import RegistrationMarks
from ._wakeups import WakeupWatcher

__all__ = ["DEFAULT_CLAIM_LIMIT", "DEFAULT_DEAD_AFTER", "SharedMode"]

logger = logging.getLogger("jobshelf.shared")

#: The events after which a submitted fire time is done (run, failed, missed or skipped).
DONE_EVENTS = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
#: Seconds without a check-in after which a holder is dead (``dead_after=``).
DEFAULT_DEAD_AFTER = 2.0
#: The most due jobs one loop pass claims (``claim_limit=``), below the executors' free capacity.
DEFAULT_CLAIM_LIMIT = 100
#: When a pass left claimable jobs to others: look again this soon (seconds).
_REPASS = 0.05
#: A run the scheduler never reported submitted this long after it was written back is released.
_UNSTARTED_AFTER = 0.5
#: The most fire times enumerated for one job when reporting merged ones.
_MAX_RUN_TIMES = 10_000


class SharedMode:
    """The shared-mode half of a store instance.

    :param lease: seconds a claim lasts without renewal (the bound for a holder that is alive but
        stuck)
    :param dead_after: seconds without a check-in after which a holder is dead
    :param claim_limit: the most due jobs one loop pass claims
    :param recheck: seconds between checks for other processes' changes without change streams
    :param projection: the fields a claim reads for the store core
    """

    def __init__(self, *, lease: float, dead_after: float, claim_limit: int, recheck: float,
                 projection: list[str]) -> None:  # fmt: skip
        self.lease = lease
        self.dead_after = dead_after
        self.claim_limit = claim_limit
        self.recheck = recheck
        self._projection = projection
        self.book = ClaimBook()
        self.marks = RegistrationMarks()
        self.lookups = LookupMarks()
        self.holder: str | None = None
        self.claims: Claims | None = None
        self.registry: HolderRegistry | None = None
        self._heartbeat: Heartbeat | None = None
        self._upkeep: LeaseUpkeep | None = None
        self._watcher: WakeupWatcher | None = None
        self._scheduler: Any = None
        self._alias = ""
        self._pass_claims: dict[Any, ClaimedJob] = {}
        self._idle_passes = 0
        self._woken_at = 0.0
        #: when the scheduler plans to wake (UTC timestamp), for the wake-up watcher
        self.planned = math.inf

    @property
    def wakeup_mode(self) -> str | None:
        return self._watcher.mode if self._watcher is not None else None

    # ------------------------------------------------------------------------- start and stop

    def start(self, scheduler: Any, alias: str, collection: Any, *, earliest: Any, accepts: Any) -> None:
        """Take a holder id for this process, check in (before claiming anything, so others see
        this instance), and start the upkeep and wake-up threads."""
        self.stop_threads()
        self._scheduler, self._alias = scheduler, alias
        self.holder = holder_id()
        self.book.clear()
        self.registry = HolderRegistry(collection, self.holder, self.dead_after)
        self.registry.check_in(0)
        self.registry.observe()
        self.claims = Claims(
            collection,
            self.holder,
            self.lease,
            book=self.book,
            registry=self.registry,
            projection=self._projection,
            accepts=accepts,
        )
        scheduler.add_listener(self.on_event, DONE_EVENTS | EVENT_JOB_SUBMITTED)
        self._heartbeat = Heartbeat(self.registry, self.book.running_count, self._on_dead, self.lease)
        self._upkeep = LeaseUpkeep(self.claims)
        self._watcher = WakeupWatcher(
            collection,
            self.holder,
            wakeup=scheduler.wakeup,
            planned=lambda: self.planned,
            earliest=earliest,
            recheck=self.recheck,
        )
        self._heartbeat.start()
        self._upkeep.start()
        self._watcher.start()

    def stop_threads(self) -> None:
        threads = (self._watcher, self._upkeep, self._heartbeat)
        for thread in threads:
            if thread is not None:
                thread.stop()
        for thread in threads:
            if thread is not None and thread.is_alive():
                thread.join(5)
        self._watcher = self._upkeep = self._heartbeat = None

    def stop(self) -> None:
        """Stop the threads, write the last releases, let other processes take over at once what
        this instance claimed and did not start, and delete its liveness record."""
        self.stop_threads()
        if self._scheduler is not None:
            with contextlib.suppress(KeyError):
                self._scheduler.remove_listener(self.on_event)
        if self.claims is None or self.registry is None:
            return
        self.claims.flush()
        leftovers = [(job_id, run.token) for job_id, run in self.book.unstarted(0.0)]
        leftovers += self.book.drain_claims()
        if leftovers:
            logger.info("%s: shutting down; %d claimed job(s) not started are left to other processes",
                        self.claims.collection.full_name, len(leftovers))  # fmt: skip
            self.claims.expire(leftovers)
        self.registry.leave()

    def forked(self) -> None:
        """In a child forked from a process where this instance was started: nothing it held is
        this process's, and its threads did not survive the fork."""
        self.book.clear()
        self._watcher = self._upkeep = self._heartbeat = None
        self.claims = self.registry = None
        self.holder = None

    # ------------------------------------------------------------------------- the loop pass

    def claim(self, timestamp: float, to_row: Callable[[dict[str, Any]], Row]) -> list[Row]:
        """This instance's share of the due jobs (see :meth:`Claims.claim_due`), as rows."""
        claims = self.claims
        if claims is None:
            return []
        unstarted = self.book.unstarted(_UNSTARTED_AFTER)
        if unstarted:
            for job_id, run in unstarted:
                logger.warning(
                    'Job "%s": the scheduler did not start its run of %s (see its error above); the '
                    "claim is left to other processes", job_id, _as_datetime(run.fire_time),
                )  # fmt: skip
            claims.expire((job_id, run.token) for job_id, run in unstarted)
        found, self._pass_claims = claims.claim_due(timestamp, self._limit())
        self._idle_passes = 0 if found else self._idle_passes + 1
        return [to_row(document)._replace(due_at=due_at) for document, due_at in found]

    def after_due(self, jobs: list[Job], now: dt.datetime) -> None:
        """After the core decoded the claimed rows: remember each job's fire time, release the
        claims of rows it skipped, and report fire times a takeover merges into one run."""
        claimed, self._pass_claims = self._pass_claims, {}
        if self.claims is None or not claimed:
            return
        handed = set()
        for job in jobs:
            claim = claimed.get(job.id)
            if claim is None:
                continue
            handed.add(job.id)
            run_times = _run_times(job, now)
            latest = run_times[-1] if run_times else job.next_run_time
            submitted = run_times if run_times and not job.coalesce else [latest]  # coalescing: the latest
            self.book.remember(job.id, latest.timestamp(), claim.token, [t.timestamp() for t in submitted])
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug('Job "%s": handed %s%s', job.id, [t.timestamp() for t in run_times],
                             " (taken over)" if claim.taken_over else "")  # fmt: skip
            if claim.taken_over and job.coalesce and len(run_times) > 1:
                self._report_merged(job, run_times[:-1], now)
        skipped = [(job_id, claim.token) for job_id, claim in claimed.items() if job_id not in handed]
        if skipped:
            logger.debug("claims released unused: %s", skipped)
            self.claims.release_now(skipped)

    def plan(self, earliest: float | None) -> float | None:
        """When the scheduler should look again: the earliest job not running elsewhere, the
        expiry of a lease another holder keeps on a due job, and soon if this pass left
        claimable jobs to others (backing off while passes claim nothing)."""
        claims = self.claims
        if claims is None:
            return earliest
        now = time.time()
        times = [t for t in (earliest, claims.held_expiry) if t is not None and math.isfinite(t)]
        if claims.left_behind:
            times.append(now + _REPASS)
        planned = min(times, default=None)
        if planned is not None and planned <= now:
            # due jobs this pass could not claim: look again soon, later while passes claim nothing
            backoff = 0.0 if claims.left_behind else min(1.0, _REPASS * 2 ** min(self._idle_passes, 5))
            planned = now + max(_REPASS, backoff)
        self.planned = planned if planned is not None else math.inf
        return planned

    def _limit(self) -> int:
        """The most jobs this pass claims: ``claim_limit`` and, while other processes are live to
        take the rest, what the executors can run at once and queue one each (so their workers
        never wait for the next pass)."""
        registry = self.registry
        if registry is None or len(registry.live) <= 1:
            return self.claim_limit  # alone: whatever waits would be claimed here anyway
        room = _free_capacity(self._scheduler)
        return max(1, min(self.claim_limit, room) if room is not None else self.claim_limit)

    def _on_dead(self, holders: frozenset[str]) -> None:
        if self.claims is not None:
            self.claims.next_abandoned_check = 0.0  # their runs in flight are read at the next pass
        self._wake()

    def _wake(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None:
            try:
                scheduler.wakeup()
            except Exception as exc:  # not running: nothing to wake
                logger.debug("could not wake the scheduler: %s", exc)

    def _report_merged(self, job: Job, merged: list[dt.datetime], now: dt.datetime) -> None:
        """Fire times a takeover found late and coalescing merges into one run: each one later
        than the job's ``misfire_grace_time`` is reported missed, as APScheduler reports a miss
        (``EVENT_JOB_MISSED`` and its warning)."""
        grace = job.misfire_grace_time
        if grace is None:
            return
        executor_logger = logging.getLogger(f"apscheduler.executors.{job.executor}")
        for run_time in merged:
            late = now - run_time
            if late.total_seconds() <= grace:
                continue
            executor_logger.warning('Run time of job "%s" was missed by %s', job, late)
            event = JobExecutionEvent(EVENT_JOB_MISSED, job.id, self._alias, run_time)
            try:
                self._scheduler._dispatch_event(event)
            except Exception:
                logger.exception('Job "%s": reporting a missed run time failed', job.id)

    # ------------------------------------------------------------------------- the holder's writes

    def begin_write(self, job_id: Any, *, in_loop: bool, removal: bool = False) -> HolderWrite:
        """How to write ``job_id``: the loop writing back a job it claimed, or the application."""
        if not in_loop:
            self.book.forget(job_id)
            return HolderWrite(WriteMode.APPLICATION)
        return self.book.begin_write(job_id, removal=removal)

    def on_event(self, event: Any) -> None:
        """A scheduler listener: a fire time of this store's job was submitted, or is done."""
        if getattr(event, "jobstore", None) != self._alias:
            return
        if event.code == EVENT_JOB_SUBMITTED:
            self.book.on_submitted(event.job_id)
            return
        run_time = getattr(event, "scheduled_run_time", None)
        run_times = getattr(event, "scheduled_run_times", None) or ([run_time] if run_time else [])
        if run_times:
            self.book.on_done(event.job_id, [t.timestamp() for t in run_times])
        claims = self.claims
        if claims is not None and claims.left_behind and event.code != EVENT_JOB_MAX_INSTANCES:
            # a run ended in a process that left due jobs for lack of room: look again now (at
            # most every _REPASS seconds)
            clock = time.monotonic()
            if clock >= self._woken_at + _REPASS:
                self._woken_at = clock
                self._wake()


def _run_times(job: Job, now: dt.datetime) -> list[dt.datetime]:
    """The fire times the scheduler submits for ``job`` at ``now`` (before coalescing), bounded."""
    times: list[dt.datetime] = []
    run_time = job.next_run_time
    try:
        while run_time is not None and run_time <= now and len(times) < _MAX_RUN_TIMES:
            times.append(run_time)
            run_time = job.trigger.get_next_fire_time(run_time, now)
    except Exception as exc:  # the scheduler meets the same error and reports it
        logger.debug('Job "%s": its trigger failed: %s', job.id, exc)
    return times


def _free_capacity(scheduler: Any) -> int | None:
    """How many more runs the scheduler's pool executors take now: their workers (threads or
    processes) twice over (each running one and with one queued), less the runs submitted and not
    finished; ``None`` when an executor does not say (asyncio, gevent, a custom one)."""
    executors = getattr(scheduler, "_executors", None)
    if not isinstance(executors, dict) or not executors:
        return None
    free = 0
    for executor in executors.values():
        workers = getattr(getattr(executor, "_pool", None), "_max_workers", None)
        instances = getattr(executor, "_instances", None)
        if type(workers) is not int or not isinstance(instances, dict):
            return None
        free += max(0, 2 * workers - sum(count for count in instances.values() if type(count) is int))
    return free


def _as_datetime(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
