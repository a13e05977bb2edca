"""Shared mode for the MongoDB adapter: claims and leases on the job documents, and wake-ups.

Several scheduler processes share one collection; each fire time runs once:

- ``get_due_jobs`` claims due jobs with one conditional ``update_many`` (a lease naming this store
  instance, until a time) and reads back exactly what it claimed with one ``find``;
- the holder's ``update_job`` writes the next state and keeps the lease, marked with the fire time
  it submitted (``pending``), until the execution event arrives: then the lease is released. A
  holder that dies leaves an expired lease: another process claims the job and runs that fire time
  (at-least-once; see the README's "Shared scheduling");
- a heartbeat renews the leases of jobs still running, so a long job keeps its lease;
- a change stream wakes the scheduler (``wakeup()``) when another process makes a job due earlier
  than this one planned to wake; without change streams, a bounded re-check interval does.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from pymongo.errors import PyMongoError

__all__ = ["LEASE_FIELD", "Leases", "holder_id"]

LEASE_FIELD = "lease"
#: The least time between two polls of the change stream when nothing changes (seconds).
_POLL = 0.25
#: The events after which a submitted fire time is done (run, failed, missed or skipped).
DONE_EVENTS = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES

logger = logging.getLogger("jobshelf.shared")


def holder_id() -> str:
    """``host:pid:random``: unique per store instance, readable by operators."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leases:
    """The lease bookkeeping of one shared store instance (MongoDB filters and updates).

    :param collection: the jobs collection
    :param lease: seconds a claim lasts without renewal
    """

    def __init__(self, collection: Any, lease: float) -> None:
        if not (isinstance(lease, (int, float)) and lease > 0 and math.isfinite(lease)):
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.collection = collection
        self.lease = float(lease)
        self.holder = holder_id()
        self._lock = threading.Lock()
        #: job id -> (the fire time (UTC timestamp) this instance claimed it for, the claim's token)
        self._claimed: dict[Any, tuple[float, int]] = {}
        #: job id -> [phase ("writing", "pending" or "done"), the fire time submitted, claim token]
        self._phase: dict[Any, list[Any]] = {}
        #: job id -> the latest fire time reported done before the loop wrote the job back
        self._done_early: dict[Any, float] = {}
        #: (job id, fire time, claim token) of runs that are done, to release in the next batch
        self._releases: list[tuple[Any, float, int]] = []
        #: abandoned fire times are looked for when one may exist (after a lease could expire)
        self._abandoned_seen = False
        self._next_abandoned_check = 0.0

    # ------------------------------------------------------------------------- claiming

    def claim(self, conditions: dict[str, Any], timestamp: float) -> tuple[int, int]:
        """Claim the due, free jobs in one update; first, when one may exist, the abandoned ones
        (another holder's lease expired while a fire time it submitted was pending: that fire time
        runs again here). Returns the claims' tokens: ``(abandoned, due)``.

        A live holder never takes over from itself: its own expired leases are renewed, not
        treated as abandoned (under load a renewal can come late; its runs are still queued here).
        """
        self.flush()
        now = time.time()
        abandoned_token, due_token = secrets.randbits(62), secrets.randbits(62)
        if self._abandoned_seen or now >= self._next_abandoned_check:
            self._abandoned_seen = False
            self._next_abandoned_check = now + self.lease / 4
            abandoned = {**self._abandoned(now), f"{LEASE_FIELD}.holder": {"$ne": self.holder}}
            self.collection.update_many({**conditions, **abandoned}, self._lease_update(now, abandoned_token))
        free = {
            "$or": [
                {LEASE_FIELD: {"$exists": False}},
                {f"{LEASE_FIELD}.until": {"$lt": now}, f"{LEASE_FIELD}.pending": {"$exists": False}},
                # this instance's own lease: a job due again while its previous run goes on
                {f"{LEASE_FIELD}.holder": self.holder, f"{LEASE_FIELD}.token": {"$ne": abandoned_token}},
            ]
        }
        due = {"next_run_time": {"$lte": timestamp}}
        self.collection.update_many({**conditions, **due, **free}, self._lease_update(now, due_token))
        return abandoned_token, due_token

    @staticmethod
    def _abandoned(now: float) -> dict[str, Any]:
        return {f"{LEASE_FIELD}.until": {"$lt": now}, f"{LEASE_FIELD}.pending": {"$exists": True}}

    def _lease_update(self, now: float, token: int) -> dict[str, Any]:
        return {
            "$set": {
                f"{LEASE_FIELD}.holder": self.holder,
                f"{LEASE_FIELD}.until": now + self.lease,
                f"{LEASE_FIELD}.token": token,
            }
        }

    def remember(self, job_id: Any, fire_time: float, token: int) -> None:
        """The fire time this instance hands to the scheduler for ``job_id``, under claim ``token``."""
        with self._lock:
            self._claimed[job_id] = (fire_time, token)

    # ------------------------------------------------------------------------- the holder's writes
    # Per claimed job: the loop's write (update or remove) and the execution's "done" event race
    # each other; the lease is released only after both, whichever comes first:
    #   begin_write -> "keep": write the lease's pending fire time -> end_write -> event releases
    #   event during the write -> end_write tells the writer to release
    #   event before the write -> begin_write says "done": the write itself releases

    def held(self, job_id: Any, token: int) -> dict[str, Any]:
        """The filter for ``job_id`` while this instance holds the lease of claim ``token`` (a later
        claim of the same job, by anyone, has another token: nothing done for this one touches it)."""
        return {"_id": job_id, f"{LEASE_FIELD}.holder": self.holder, f"{LEASE_FIELD}.token": token}

    def begin_write(self, job_id: Any) -> tuple[str, int]:
        """How to write ``job_id`` now, and under which claim: ``"app"`` (not claimed here: an
        application's change, which releases any lease), ``"done"`` (its run is over: write and
        release) or ``"keep"`` (write, keeping the lease with :meth:`keep_fields` until the run is
        done)."""
        with self._lock:
            claim = self._claimed.pop(job_id, None)
            if claim is None:
                return "app", 0
            fire_time, token = claim
            done = self._done_early.pop(job_id, None)
            if done is not None and done >= fire_time - 1e-6:
                return "done", token
            self._phase[job_id] = ["writing", fire_time, token]
            return "keep", token

    def keep_fields(self, job_id: Any) -> dict[str, Any]:
        with self._lock:
            fire_time = self._phase[job_id][1]
        return {f"{LEASE_FIELD}.pending": fire_time, f"{LEASE_FIELD}.until": time.time() + self.lease}

    def end_write(self, job_id: Any, written: bool) -> tuple[float, int] | None:
        """After a ``"keep"`` write: the (fire time, claim token) to release now when the run
        finished meanwhile (the writer releases it), else ``None``."""
        with self._lock:
            phase = self._phase.get(job_id)
            if phase is None:
                return None
            if not written or phase[0] == "done":
                del self._phase[job_id]
                return (phase[1], phase[2]) if written else None
            phase[0] = "pending"
            return None

    def on_event(self, event: Any) -> None:
        """A scheduler listener: a submitted fire time is done (run, failed, missed or skipped)."""
        run_time = getattr(event, "scheduled_run_time", None)
        run_times = getattr(event, "scheduled_run_times", None) or ([run_time] if run_time else [])
        if not run_times:
            return
        latest = max(t.timestamp() for t in run_times)
        with self._lock:
            phase = self._phase.get(event.job_id)
            if phase is None:
                if len(self._done_early) > 10_000:  # events for jobs never written back
                    self._done_early.clear()
                self._done_early[event.job_id] = latest
                return
            if latest < phase[1] - 1e-6 or phase[0] == "done":
                return  # not this run yet, or the writer releases it already
            if phase[0] == "writing":
                phase[0] = "done"  # the writer releases once its write is in
                return
            del self._phase[event.job_id]
        self.release(event.job_id, phase[1], phase[2])

    def release(self, job_id: Any, fire_time: float, token: int) -> None:
        """Queue the release of claim ``token``'s lease kept for ``fire_time`` (only that lease: a
        newer claim is never touched). Releases are written in one batch by :meth:`flush`, at the
        next claim or within a fraction of a second, whichever comes first."""
        with self._lock:
            self._releases.append((job_id, fire_time, token))

    def flush(self) -> None:
        """Write the queued releases: two updates at most, however many there are (a finished job
        waiting for its last run is deleted then)."""
        with self._lock:
            batch, self._releases = self._releases, []
        if not batch:
            return
        mine = [
            {**self.held(job_id, token), f"{LEASE_FIELD}.pending": fire_time}
            for job_id, fire_time, token in batch
        ]
        try:
            self.collection.delete_many({"$or": mine, f"{LEASE_FIELD}.remove": True})
            self.collection.update_many({"$or": mine}, {"$unset": {LEASE_FIELD: ""}})
        except PyMongoError as exc:  # kept for the next flush; a lease also expires by itself
            with self._lock:
                self._releases[:0] = batch
            logger.warning("Could not release %d lease(s) (%s); retrying", len(batch), exc)

    def renew(self) -> None:
        """Extend the leases of jobs whose runs are still going here. A claim the loop has not
        written back is not renewed: a loop stuck longer than the lease loses it, and another
        process takes the job over."""
        with self._lock:
            running = list(self._phase)
        if running:
            self.collection.update_many(
                {"_id": {"$in": running}, f"{LEASE_FIELD}.holder": self.holder},
                {"$set": {f"{LEASE_FIELD}.until": time.time() + self.lease}},
            )

    def forget(self, job_id: Any) -> None:
        with self._lock:
            self._claimed.pop(job_id, None)
            self._phase.pop(job_id, None)
            self._done_early.pop(job_id, None)

    # ------------------------------------------------------------------------- waking up

    def next_times(self, conditions: dict[str, Any]) -> list[float]:
        """When this instance should look again: the earliest job that is free (or its own), the
        expiry of another instance's lease on an earlier job, and now if an abandoned fire time
        waits (looked for every ``lease / 4`` seconds: none can appear sooner).

        One query when the earliest job is free, as it is unless another process is running it.
        """
        now = time.time()
        scheduled = {**conditions, "next_run_time": {"$lte": math.inf}}
        times = []
        earliest = self.collection.find_one(
            scheduled, ["next_run_time", LEASE_FIELD], sort=[("next_run_time", 1)]
        )
        if earliest is not None:
            lease = earliest.get(LEASE_FIELD) or {}
            until = lease.get("until")
            if isinstance(until, (int, float)) and until >= now and lease.get("holder") != self.holder:
                times.append(float(until))  # another live process runs it: look again at its expiry
                free = {"$or": [{LEASE_FIELD: {"$exists": False}}, {f"{LEASE_FIELD}.until": {"$lt": now}},
                                {f"{LEASE_FIELD}.holder": self.holder}]}  # fmt: skip
                earliest = self.collection.find_one({**scheduled, **free}, ["next_run_time"],
                                                    sort=[("next_run_time", 1)])  # fmt: skip
            if earliest is not None:
                times.append(float(earliest["next_run_time"]))
        if now >= self._next_abandoned_check:
            abandoned = {**conditions, **self._abandoned(now), f"{LEASE_FIELD}.holder": {"$ne": self.holder}}
            if self.collection.find_one(abandoned, ["_id"]) is not None:
                self._abandoned_seen = True
                times.append(now)
            else:
                self._next_abandoned_check = now + self.lease / 4
        return times


class Watcher(threading.Thread):
    """Wakes the scheduler when another process makes a job due sooner; renews running leases.

    Uses a change stream where the server offers one, else re-checks every ``recheck`` seconds.
    """

    def __init__(self, leases: Leases, wakeup: Callable[[], None], planned: Callable[[], float],
                 recheck: float, where: str) -> None:  # fmt: skip
        super().__init__(name=f"jobshelf-watch-{where}", daemon=True)
        self._leases = leases
        self._wakeup_scheduler = wakeup
        self._planned = planned
        self._recheck = recheck
        self._where = where
        self._halt = threading.Event()
        self.mode = "starting"

    def stop(self) -> None:
        self._halt.set()

    def _wakeup(self) -> None:
        try:
            self._wakeup_scheduler()
        except Exception as exc:  # a scheduler not started (or shutting down) has nothing to wake
            logger.debug("%s: could not wake the scheduler: %s", self._where, exc)

    def run(self) -> None:
        renew_every = self._leases.lease / 3
        next_renewal = time.monotonic() + renew_every
        stream = self._open_stream()
        next_recheck = time.monotonic() + self._recheck
        while not self._halt.is_set():
            try:
                if stream is not None:
                    asked = time.monotonic()
                    change = stream.try_next()  # waits up to max_await_time_ms for a change
                    if change is not None:
                        self._consider(change)
                    else:  # some servers answer at once instead of waiting: at most 4 polls a second
                        self._halt.wait(max(0.0, _POLL - (time.monotonic() - asked)))
                else:
                    self._halt.wait(min(self._recheck, renew_every, 0.25))
                    if time.monotonic() >= next_recheck:
                        next_recheck = time.monotonic() + self._recheck
                        self._wakeup()
                self._leases.flush()
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    self._leases.renew()
            except PyMongoError as exc:
                logger.warning("%s: watching for changes failed (%s); retrying", self._where, exc)
                if stream is not None:
                    stream.close()
                self._halt.wait(1)
                self._wakeup()  # a change may have been missed meanwhile
                stream = self._open_stream()
        if stream is not None:
            stream.close()

    def _open_stream(self) -> Any:
        pipeline = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}]
        try:
            stream = self._leases.collection.watch(pipeline, max_await_time_ms=250)
        except PyMongoError as exc:
            if self.mode != "re-check":
                logger.info("%s: change streams are not available (%s); re-checking every %ss instead",
                            self._where, exc, self._recheck)  # fmt: skip
            self.mode = "re-check"
            return None
        if self.mode != "change stream":
            logger.info("%s: waking schedulers with a change stream", self._where)
        self.mode = "change stream"
        return stream

    def _consider(self, change: dict[str, Any]) -> None:
        fields = (
            (change.get("updateDescription") or {}).get("updatedFields") or change.get("fullDocument") or {}
        )
        next_run_time = fields.get("next_run_time")
        if isinstance(next_run_time, (int, float)) and next_run_time < self._planned():
            self._wakeup()
