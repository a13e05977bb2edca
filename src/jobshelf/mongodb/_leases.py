"""Leases on job documents, read as untrusted input, and the runs one shared store instance holds.

A lease as jobshelf writes it, always as a whole sub-document::

    lease: {holder: "host:pid:random", until: <UTC timestamp>, token: <int>,
            pending: <the fire time submitted, UTC timestamp>, remove: true}

``pending`` is set once the holder has submitted a fire time and written the job back; ``remove``
marks a finished job that is deleted when its last run is done. A released lease is
``{holder, until: 0}``: expired, free for anyone, and written under the holder's name so that its
own change stream does not report it back to it. Anyone who can write the
collection can put any BSON value there: :func:`read_lease` turns whatever is stored into a
:class:`Lease` whose fields are ``None`` when they are not what jobshelf writes, and every filter
here is written so that a malformed lease makes its job claimable (a whole new lease replaces it)
or, at worst, skips that one job. Nothing here raises on a stored value.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._core.reading import as_timestamp
from ._fields import is_integer

__all__ = [
    "LEASE_FIELD",
    "ClaimBook",
    "HolderWrite",
    "Lease",
    "RunInFlight",
    "WriteMode",
    "held_by_others",
    "read_lease",
]

LEASE_FIELD = "lease"
#: The longest holder id read from a document (longer: not a holder jobshelf wrote).
_MAX_HOLDER_LENGTH = 300


class Lease(NamedTuple):
    """A stored lease as read: each field ``None`` (or ``False``) unless it holds what jobshelf
    writes there.

    :ivar holder: the holder id (a string)
    :ivar until: when the lease expires (a UTC timestamp; not NaN)
    :ivar token: the claim's token (an int)
    :ivar pending: the fire time the holder submitted (a UTC timestamp in the calendar's range)
    :ivar remove: a finished job, deleted when its last run is done
    """

    holder: str | None
    until: float | None
    token: int | None
    pending: float | None
    remove: bool

    @property
    def well_formed(self) -> bool:
        """A lease jobshelf could have written: holder, expiry and token all valid."""
        return self.holder is not None and self.until is not None and self.token is not None


def read_lease(value: Any) -> Lease | None:
    """The lease stored in a document's ``lease`` field (``None``: there is none).

    Never raises: a value that is no mapping, or fields of other types, give a :class:`Lease`
    with those fields ``None``.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        return Lease(None, None, None, None, False)
    holder = value.get("holder")
    until = value.get("until")
    token: Any = value.get("token")
    return Lease(
        holder if type(holder) is str and len(holder) <= _MAX_HOLDER_LENGTH else None,
        float(until)
        if isinstance(until, (int, float)) and type(until) is not bool and not math.isnan(until)
        else None,
        int(token) if is_integer(token) else None,
        as_timestamp(value.get("pending")),
        value.get("remove") is True,
    )


def held_by_others(now: float, me: str, dead: frozenset[str]) -> dict[str, Any]:
    """The filter for documents another holder, not known dead, holds at ``now``.

    Used under ``$nor``: whatever a malformed lease holds (a string, an array, an expiry that is
    no number), its document is not held by anyone, so it can be claimed (the claim replaces it).
    """
    return {
        f"{LEASE_FIELD}.until": {"$gte": now},
        f"{LEASE_FIELD}.holder": {"$type": "string", "$nin": [me, *sorted(dead)]},
    }


def is_held_by_others(lease: Lease | None, now: float, me: str, dead: frozenset[str]) -> bool:
    """:func:`held_by_others` for a lease already read (the same rule, for well-formed leases;
    a malformed one counts as free, and the server's filter decides at the claim)."""
    return (
        lease is not None
        and lease.holder is not None
        and lease.until is not None
        and lease.until >= now
        and lease.holder != me
        and lease.holder not in dead
    )


# ----------------------------------------------------------------------------- the holder's runs


class WriteMode(enum.Enum):
    """How a shared store writes a job back (see :class:`ClaimBook`)."""

    #: not claimed here: an application's change, which releases any lease
    APPLICATION = "application"
    #: claimed here and its run is over already: write and release in one update
    RUN_OVER = "run over"
    #: claimed here, the run is going on: write and keep the lease, marked with the fire time
    RUN_PENDING = "run pending"


class HolderWrite(NamedTuple):
    """A write of a job by its holder (or by the application): how, and under which claim."""

    mode: WriteMode
    token: int = 0
    fire_time: float = 0.0


@dataclass
class RunInFlight:
    """A fire time this instance claimed, submitted (or is submitting) and has not released.

    :ivar fire_time: the latest fire time handed to the scheduler for this claim (UTC timestamp)
    :ivar token: the claim's token: every write and release for this run is bound to it
    :ivar stage: ``"writing"`` (the loop is writing the job back), ``"pending"`` (written; the
        run goes on) or ``"done"`` (the run ended while the loop was writing)
    :ivar submitted: the scheduler reported the run submitted (or skipped)
    :ivar removal: the job is finished: its document is deleted at the release
    :ivar written_at: when the loop wrote it back (``time.monotonic()``)
    """

    fire_time: float
    token: int
    stage: str = "writing"
    submitted: bool = False
    removal: bool = False
    written_at: float = 0.0


class Release(NamedTuple):
    """A run that is over: its lease is released (its document deleted, for a finished job)."""

    job_id: Any
    fire_time: float
    token: int
    removal: bool


class ClaimBook:
    """What one shared store instance has claimed and not yet released (in memory, thread-safe).

    Per claimed job, the loop's write (``update_job``/``remove_job``) and the run's end (an
    execution event) race each other; the lease is released only after both, whichever comes
    first:

    - write first: :meth:`begin_write` gives ``RUN_PENDING``, the write keeps the lease with the
      fire time, :meth:`end_write` marks it pending, and the event queues the release;
    - event during the write: the event marks the run done, :meth:`end_write` queues the release;
    - event before the write: :meth:`begin_write` gives ``RUN_OVER``, the write itself releases.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: job id -> (fire time handed to the scheduler, claim token): claimed, not yet written
        self._claimed: dict[Any, tuple[float, int]] = {}
        #: job id -> its run in flight (written back, or being written)
        self._runs: dict[Any, RunInFlight] = {}
        #: job id -> the latest fire time reported done before the loop wrote the job back
        self._done_early: dict[Any, float] = {}
        #: runs that are over, released in the next batch
        self._releases: list[Release] = []
        self.releases_queued = threading.Event()
        #: when (time.monotonic()) the oldest queued release was queued
        self.first_release_at = 0.0

    # ------------------------------------------------------------------------- claims

    def remember(self, job_id: Any, fire_time: float, token: int) -> None:
        """``job_id`` was claimed under ``token``; ``fire_time`` is the latest fire time the
        scheduler will submit for it in this pass."""
        with self._lock:
            self._claimed[job_id] = (fire_time, token)

    def is_claimed(self, job_id: Any) -> bool:
        """Claimed and handed to the scheduler, not yet written back."""
        with self._lock:
            return job_id in self._claimed

    def running_count(self) -> int:
        with self._lock:
            return len(self._runs)

    def running_ids(self, *, submitted_only: bool = True) -> list[Any]:
        with self._lock:
            return [job_id for job_id, run in self._runs.items() if run.submitted or not submitted_only]

    def unstarted(self, older_than: float) -> list[tuple[Any, RunInFlight]]:
        """Runs written back at least ``older_than`` seconds ago that the scheduler never reported
        submitted (its executor refused them); they are taken out of the book."""
        now = time.monotonic()
        with self._lock:
            found = [
                (job_id, run)
                for job_id, run in self._runs.items()
                if not run.submitted and run.stage != "writing" and now - run.written_at >= older_than
            ]
            for job_id, _ in found:
                del self._runs[job_id]
        return found

    def drain_claims(self) -> list[tuple[Any, int]]:
        """Claims never written back, as ``(job id, token)``; they are taken out of the book."""
        with self._lock:
            found = [(job_id, token) for job_id, (_, token) in self._claimed.items()]
            self._claimed.clear()
        return found

    # ------------------------------------------------------------------------- the loop's writes

    def begin_write(self, job_id: Any, *, removal: bool = False) -> HolderWrite:
        """How to write ``job_id`` now: an application's change (not claimed here), a run that is
        over (write and release) or a run going on (write, keeping the lease)."""
        with self._lock:
            claim = self._claimed.pop(job_id, None)
            if claim is None:
                return HolderWrite(WriteMode.APPLICATION)
            fire_time, token = claim
            done = self._done_early.pop(job_id, None)
            if done is not None and done >= fire_time - 1e-6:
                return HolderWrite(WriteMode.RUN_OVER, token, fire_time)
            self._runs[job_id] = RunInFlight(fire_time, token, removal=removal)
            return HolderWrite(WriteMode.RUN_PENDING, token, fire_time)

    def end_write(self, job_id: Any, written: bool) -> None:
        """After a ``RUN_PENDING`` write: the run goes on, or (it ended meanwhile) is released."""
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                return
            if not written:
                del self._runs[job_id]
                return
            run.written_at = time.monotonic()
            if run.stage == "done":
                del self._runs[job_id]
                self._queue(Release(job_id, run.fire_time, run.token, run.removal))
                return
            run.stage = "pending"

    # ------------------------------------------------------------------------- the scheduler's events

    def on_submitted(self, job_id: Any) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is not None:
                run.submitted = True

    def on_done(self, job_id: Any, latest: float) -> None:
        """A run of ``job_id`` for fire times up to ``latest`` is over (run, failed or missed)."""
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                if len(self._done_early) > 10_000:  # events for jobs never written back
                    self._done_early.clear()
                self._done_early[job_id] = max(latest, self._done_early.get(job_id, latest))
                return
            if latest < run.fire_time - 1e-6 or run.stage == "done":
                return  # not this run yet, or the writer releases it already
            run.submitted = True
            if run.stage == "writing":
                run.stage = "done"  # the writer releases it once its write is in
                return
            del self._runs[job_id]
            self._queue(Release(job_id, run.fire_time, run.token, run.removal))

    def forget(self, job_id: Any) -> None:
        """The application changed the job: whatever this instance held of it is over."""
        with self._lock:
            self._claimed.pop(job_id, None)
            self._runs.pop(job_id, None)
            self._done_early.pop(job_id, None)

    def clear(self) -> None:
        """Forget everything (a forked child: its parent's claims are not its own)."""
        with self._lock:
            self._claimed.clear()
            self._runs.clear()
            self._done_early.clear()
            self._releases.clear()
            self.releases_queued.clear()

    # ------------------------------------------------------------------------- releases

    def _queue(self, release: Release) -> None:
        if not self._releases:
            self.first_release_at = time.monotonic()
        self._releases.append(release)
        self.releases_queued.set()

    def queue_release(self, release: Release) -> None:
        with self._lock:
            self._queue(release)

    def take_releases(self) -> list[Release]:
        with self._lock:
            batch, self._releases = self._releases, []
            self.releases_queued.clear()
        return batch

    def requeue(self, batch: list[Release]) -> None:
        with self._lock:
            if not self._releases:
                self.first_release_at = time.monotonic()
            self._releases[:0] = batch
            self.releases_queued.set()
