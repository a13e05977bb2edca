"""Leases on job documents, read as untrusted input, and the runs one shared store instance holds.

A lease as jobshelf writes it, always as a whole sub-document::

    lease: {holder: "host:pid:random", until: <UTC timestamp>, token: <int>,
            pending: <the earliest fire time going on, UTC timestamp>, remove: true}

``pending`` is set once the holder has submitted fire times and written the job back: the earliest
of those still going on there (whoever takes the lease over runs from it); ``remove``
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._core.reading import MAX_PENDING_FIRE_TIMES, as_timestamp
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
    #: the latest fire time submitted under the claim
    fire_time: float = 0.0
    #: the earliest fire time submitted under the claim: the lease's ``pending``, run again by
    #: whoever takes the claim over, with every fire time after it
    first: float = 0.0


@dataclass
class RunInFlight:
    """A job this instance claimed and submitted (or is submitting) and has not released: the fire
    times of its runs going on here, which the lease covers.

    :ivar fire_time: the latest fire time handed to the scheduler (UTC timestamp)
    :ivar token: the claim's token: every write and release for this run is bound to it
    :ivar outstanding: the fire times submitted and not yet reported done (a later claim of the
        same job, due again while these run, adds its own: one lease covers them all)
    :ivar stage: ``"writing"`` (the loop is writing the job back) or ``"pending"`` (written; the
        runs go on)
    :ivar submitted: the scheduler reported the run submitted (or skipped)
    :ivar removal: the job is finished: its document is deleted at the release
    :ivar written_at: when the loop wrote it back (``time.monotonic()``)
    """

    fire_time: float
    token: int
    outstanding: set[float] = field(default_factory=set)
    stage: str = "writing"
    submitted: bool = False
    removal: bool = False
    written_at: float = 0.0

    @property
    def over(self) -> bool:
        """The latest fire time is reported done: the lease is released (an earlier run of an
        overlapping job may still go on; a takeover would not run it again)."""
        return _key(self.fire_time) not in self.outstanding


class Release(NamedTuple):
    """A run that is over: its lease is released (its document deleted, for a finished job)."""

    job_id: Any
    fire_time: float
    token: int
    removal: bool


class _Claim(NamedTuple):
    latest: float
    token: int
    fire_times: frozenset[float]


def _key(fire_time: float) -> float:
    """A fire time as the book compares it (to the microsecond, as APScheduler's datetimes)."""
    return round(fire_time, 6)


#: The most fire times the book keeps per job, and the most jobs with fire times reported done
#: before their write-back.
_MAX_KEPT = 10_000


class ClaimBook:
    """What one shared store instance has claimed and not yet released (in memory, thread-safe).

    Per claimed job, the loop's write (``update_job``/``remove_job``) and the runs' ends (execution
    events, one per fire time) race each other; the lease is released only after both, whichever
    comes first:

    - write first: :meth:`begin_write` gives ``RUN_PENDING``, the write keeps the lease marked with
      the earliest fire time still going (``pending``), :meth:`end_write` marks it pending, and
      the event for the latest fire time queues the release;
    - events during the write: they are counted off, and :meth:`end_write` queues the release if
      the latest is among them;
    - events before the write: :meth:`begin_write` gives ``RUN_OVER`` when the latest is among
      them, and the write itself releases.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: job id -> the claim handed to the scheduler, not yet written back
        self._claimed: dict[Any, _Claim] = {}
        #: job id -> its runs in flight (written back, or being written)
        self._runs: dict[Any, RunInFlight] = {}
        #: job id -> fire times reported done before the loop wrote the job back
        self._done_early: dict[Any, set[float]] = {}
        #: runs that are over, released in the next batch
        self._releases: list[Release] = []
        self.releases_queued = threading.Event()
        #: when (time.monotonic()) the oldest queued release was queued
        self.first_release_at = 0.0

    # ------------------------------------------------------------------------- claims

    def remember(self, job_id: Any, fire_time: float, token: int, fire_times: Iterable[float] = ()) -> None:
        """``job_id`` was claimed under ``token``; ``fire_time`` is the latest fire time the
        scheduler will submit for it in this pass, ``fire_times`` all it will submit (default:
        that one)."""
        submitted = frozenset(_key(t) for t in fire_times) or frozenset({_key(fire_time)})
        with self._lock:
            self._claimed[job_id] = _Claim(fire_time, token, submitted)

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
            found = [(job_id, claim.token) for job_id, claim in self._claimed.items()]
            self._claimed.clear()
        return found

    # ------------------------------------------------------------------------- the loop's writes

    def begin_write(self, job_id: Any, *, removal: bool = False) -> HolderWrite:
        """How to write ``job_id`` now: an application's change (not claimed here), runs that are
        over (write and release) or runs going on (write, keeping the lease marked with the
        earliest of their fire times)."""
        with self._lock:
            claim = self._claimed.pop(job_id, None)
            if claim is None:
                return HolderWrite(WriteMode.APPLICATION)
            outstanding = set(claim.fire_times - self._done_early.pop(job_id, set()))
            earlier = self._runs.get(job_id)
            if earlier is not None:  # runs of an earlier claim still going here: the lease covers them
                outstanding |= earlier.outstanding
            if _key(claim.latest) not in outstanding:  # its latest run is over already
                return HolderWrite(WriteMode.RUN_OVER, claim.token, claim.latest, claim.latest)
            run = RunInFlight(claim.latest, claim.token, outstanding, removal=removal)
            run.submitted = earlier is not None and earlier.submitted
            self._runs[job_id] = run
            # a takeover runs from the earliest (as far back as the reader follows a trigger)
            first = sorted(outstanding)[-MAX_PENDING_FIRE_TIMES:][0]
            return HolderWrite(WriteMode.RUN_PENDING, claim.token, claim.latest, first)

    def end_write(self, job_id: Any, written: bool) -> None:
        """After a ``RUN_PENDING`` write: the runs go on, or (they ended meanwhile) are released."""
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                return
            if not written:
                del self._runs[job_id]
                return
            run.written_at = time.monotonic()
            if run.over:
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

    def on_done(self, job_id: Any, fire_times: Iterable[float]) -> None:
        """Runs of ``job_id`` for ``fire_times`` are over (run, failed, missed or skipped)."""
        done = {_key(t) for t in fire_times}
        with self._lock:
            run = self._runs.get(job_id)
            rest = done
            if run is not None:
                rest = done - run.outstanding
                run.outstanding -= done
                run.submitted = True
            if rest and (run is None or job_id in self._claimed):
                self._done_before_write(job_id, rest)  # a claim not written back yet: its runs
            if run is None or not run.over or run.stage == "writing":
                return  # its latest run still going; or the writer releases it once its write is in
            del self._runs[job_id]
            self._queue(Release(job_id, run.fire_time, run.token, run.removal))

    def _done_before_write(self, job_id: Any, done: set[float]) -> None:
        early = self._done_early.get(job_id)
        if early is None:
            if len(self._done_early) >= _MAX_KEPT:  # events for jobs never written back
                self._done_early.clear()
            early = self._done_early[job_id] = set()
        if len(early) < _MAX_KEPT:
            early |= done

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
