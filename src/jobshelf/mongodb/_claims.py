"""Claims: the MongoDB operations on leases of one shared store instance.

A claim pass (``get_due_jobs``), in at most three round trips however many jobs are due:

1. one ``find`` reads the due jobs and the runs in flight (``lease.pending``), through the
   ``next_run_time`` and ``lease.pending`` indexes: what it costs follows the due jobs, not the
   collection;
2. this instance picks its share (see :meth:`Claims.claim_due`) and claims it with one
   ``update_many`` per kind (free jobs get a whole new lease; a dead or expired holder's pending
   fire time, or this instance's own running job due again, keeps its ``pending``), each
   conditioned on the document being unchanged and not held by a live holder;
3. only if some were taken by another process meanwhile, one ``find`` reads back which are ours.

Releases (runs that are over) are written in batches by the upkeep thread; renewals extend the
leases of running jobs.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from ._fields import REVISION_FIELD
from ._leases import LEASE_FIELD, ClaimBook, Lease, held_by_others, is_held_by_others, read_lease

__all__ = ["ClaimedJob", "Claims", "Found"]

logger = logging.getLogger("jobshelf.shared")

#: The most documents one claim pass reads.
_MAX_FIND = 500
#: A due job nobody has claimed for this long (seconds) is claimed even beyond this instance's share.
_STEAL_AFTER = 0.25
#: A job picked and not claimed is not tried again for this long (seconds).
_REFUSED_FOR = 1.0
_SORT = [("next_run_time", ASCENDING), ("_id", ASCENDING)]


#: A claimed document, with the fire time to run instead of its state's (a taken-over pending one).
Found = tuple[dict[str, Any], Optional[float]]


@dataclass
class _Seen:
    """What a claim pass read, sorted."""

    free: list[tuple[dict[str, Any], Lease | None]] = field(default_factory=list)
    kept: list[tuple[dict[str, Any], Lease]] = field(default_factory=list)
    elsewhere: int = 0  # due or running, held by live others
    expiry: float = math.inf  # the earliest expiry of those leases


class ClaimedJob(NamedTuple):
    """A job this instance claimed in a pass.

    :ivar token: the claim's token
    :ivar taken_over: its lease was another holder's (dead, expired or malformed)
    """

    token: int
    taken_over: bool


class Claims:
    """Claims, releases and renewals of one store instance on the jobs collection.

    :param collection: the jobs collection
    :param holder: this instance's holder id
    :param lease: seconds a claim lasts without renewal
    :param book: the runs this instance holds
    :param registry: the liveness records (which holders are live, which dead)
    :param projection: the fields a claim reads for the store core
    """

    def __init__(self, collection: Any, holder: str, lease: float, *, book: ClaimBook, registry: Any,
                 projection: list[str]) -> None:  # fmt: skip
        self.collection = collection
        self.holder = holder
        self.lease = lease
        self.book = book
        self.registry = registry
        self._projection = [*projection, REVISION_FIELD, "next_run_time", LEASE_FIELD]
        #: what the last pass found: the earliest expiry of another holder's lease, and whether
        #: it left claimable jobs to other processes
        self.held_expiry = math.inf
        self.left_behind = False
        #: id -> until when (time.monotonic()) it is not tried again: picked, and the claim did
        #: not match (another process was quicker, or a malformed lease the server counts as held)
        self._refused: dict[Any, float] = {}

    # ------------------------------------------------------------------------- filters

    def held(self, job_id: Any, token: int) -> dict[str, Any]:
        """The filter for ``job_id`` while this instance holds claim ``token`` (a later claim of
        the same job, by anyone, has another token: nothing done for this one touches it)."""
        return {"_id": job_id, f"{LEASE_FIELD}.holder": self.holder, f"{LEASE_FIELD}.token": token}

    def not_held_overdue(self) -> dict[str, Any]:
        """Leaves out jobs already due that a live holder holds (it is running them): the
        earliest job to wake up for is among the rest."""
        now = time.time()
        held = held_by_others(now, self.holder, self.registry.dead)
        return {"$nor": [{"next_run_time": {"$lte": now}, **held}]}

    def lease_fields(self, token: int, fire_time: float, *, remove: bool = False) -> dict[str, Any]:
        """The whole lease the holder writes back with a job whose run goes on."""
        lease: dict[str, Any] = {"holder": self.holder, "until": time.time() + self.lease, "token": token,
                                 "pending": fire_time}  # fmt: skip
        if remove:
            lease["remove"] = True
        return {LEASE_FIELD: lease}

    # ------------------------------------------------------------------------- claiming

    def claim_due(
        self, conditions: dict[str, Any], timestamp: float, limit: int
    ) -> tuple[list[Found], dict[Any, ClaimedJob]]:
        """Claim this instance's share of the due jobs, at most ``limit``; return their documents
        with the fire time to run instead of the state's (a taken-over pending fire time), and
        what was claimed.

        The share: with ``L`` live holders and ``W`` jobs due or running everywhere, this instance
        takes ``ceil(W / L)`` minus what it runs already, so processes that wake together split
        the work, and one that wakes first cannot take everything. Jobs are picked from a
        different offset per holder so that simultaneous claims rarely collide. A job left
        unclaimed (another process's share) is claimed by anyone once it is ``0.25 s`` late.
        """
        self.flush()  # runs that ended are released first: they count as free
        now = time.time()
        width = max(1, len(self.registry.live))
        due_or_running = {"$or": [{"next_run_time": {"$lte": timestamp}},
                                  {f"{LEASE_FIELD}.pending": {"$lte": now}}]}  # fmt: skip
        documents = self.collection.find({**conditions, **due_or_running}, self._projection, sort=_SORT,
                                         limit=min(_MAX_FIND, limit * width + 8))  # fmt: skip
        seen = self._classify(documents, timestamp, now)
        self.held_expiry = seen.expiry

        mine = self.book.running_count()
        candidates = len(seen.free) + len(seen.kept)
        share = max(0, math.ceil((candidates + seen.elsewhere + mine) / width) - mine)
        if share == 0 and candidates and (seen.kept or _late(seen.free[0][0], now)):
            share = 1
        take = min(limit, share, candidates)
        self.left_behind = take < candidates
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("claim pass: %d free, %d kept, %d held elsewhere, %d running here, %d live: take %d",
                         len(seen.free), len(seen.kept), seen.elsewhere, mine, width, take)  # fmt: skip
        live = self.registry.live
        picked_kept = seen.kept[:take]
        rank = live.index(self.holder) if self.holder in live else 0
        picked_free = _spread(seen.free, rank, width)[: take - len(picked_kept)]
        if not picked_kept and not picked_free:
            return [], {}
        return self._claim(picked_free, picked_kept, now)

    def _classify(self, documents: Iterable[dict[str, Any]], timestamp: float, now: float) -> _Seen:
        """Sort what a claim pass read: free due jobs, pending fire times to keep (a dead or
        expired holder's, or this instance's own running job due again), and others' runs."""
        me, dead = self.holder, self.registry.dead
        seen = _Seen()
        if self._refused:
            clock = time.monotonic()
            self._refused = {key: until for key, until in self._refused.items() if until > clock}
        for document in documents:
            revision = document.get(REVISION_FIELD)
            if not (type(document.get("_id")) is str or _integer(document.get("_id"))) or not (
                revision is None or _integer(revision)
            ):
                continue  # no claim condition can name it safely: left alone
            if document["_id"] in self._refused:
                seen.elsewhere += 1
                continue
            lease = read_lease(document.get(LEASE_FIELD))
            index = _number(document.get("next_run_time"))
            due = index is not None and index <= timestamp
            if lease is not None and lease.holder == me:
                if self.book.is_claimed(document["_id"]):
                    continue  # claimed by an earlier pass and not written back yet (kept through an outage)
                if due and lease.pending is not None and lease.token is not None:
                    seen.kept.append((document, lease))  # running here, and due again
                elif due:
                    seen.free.append((document, lease))
            elif lease is not None and lease.until is not None and is_held_by_others(lease, now, me, dead):
                seen.expiry = min(seen.expiry, lease.until)
                seen.elsewhere += 1
            elif lease is not None and lease.well_formed and lease.pending is not None:
                seen.kept.append((document, lease))  # a dead or expired holder's pending fire time
            elif due:
                seen.free.append((document, lease))
        return seen

    def _claim(
        self,
        free: list[tuple[dict[str, Any], Lease | None]],
        kept: list[tuple[dict[str, Any], Lease]],
        now: float,
    ) -> tuple[list[Found], dict[Any, ClaimedJob]]:
        """Claim the picked jobs, each only if unchanged since read and not held by a live holder:
        free ones with a whole new lease, kept ones keeping their ``pending``."""
        me = self.holder
        token = secrets.randbits(62)
        unheld = {"$nor": [held_by_others(now, me, self.registry.dead)]}
        matched = 0
        if free:
            condition = {"$or": [_unchanged(document) for document, _ in free], **unheld}
            new_lease = {"holder": me, "until": now + self.lease, "token": token}
            matched += self.collection.update_many(
                condition, {"$set": {LEASE_FIELD: new_lease}}
            ).matched_count
        if kept:
            condition = {"$or": [{**_unchanged(document), f"{LEASE_FIELD}.holder": lease.holder,
                                  f"{LEASE_FIELD}.token": lease.token} for document, lease in kept],
                         **unheld}  # fmt: skip
            update = {f"{LEASE_FIELD}.holder": me, f"{LEASE_FIELD}.until": now + self.lease,
                      f"{LEASE_FIELD}.token": token}  # fmt: skip
            matched += self.collection.update_many(condition, {"$set": update}).matched_count
        picked: list[tuple[dict[str, Any], Lease | None]] = [*kept, *free]
        if matched < len(picked):  # another process took some meanwhile: which are ours?
            ours = {d["_id"] for d in self.collection.find({f"{LEASE_FIELD}.token": token}, ["_id"])}
            refused_until = time.monotonic() + _REFUSED_FOR
            for document, _ in picked:
                if document["_id"] not in ours and len(self._refused) < _MAX_FIND:
                    self._refused[document["_id"]] = refused_until
            picked = [(document, lease) for document, lease in picked if document["_id"] in ours]
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("claimed %s (of %d picked) under %d", [d["_id"] for d, _ in picked], matched, token)
        found, claimed = [], {}
        for document, lease in picked:
            taken_over = lease is not None and lease.holder != me
            found.append((document, lease.pending if lease is not None and taken_over else None))
            claimed[document["_id"]] = ClaimedJob(token, taken_over)
        return found, claimed

    # ------------------------------------------------------------------------- lease upkeep

    def release_now(self, claims: Iterable[tuple[Any, int]]) -> None:
        """Release claims handed to nobody (a job skipped as not due, or quarantined)."""
        conditions = [self.held(job_id, token) for job_id, token in claims]
        if conditions:
            self.collection.update_many({"$or": conditions}, {"$unset": {LEASE_FIELD: ""}})

    def expire(self, claims: Iterable[tuple[Any, int]]) -> None:
        """Let other processes take these claims over at once (their pending fire times run
        there): claims this instance will not start (its executor refused them, or it is
        shutting down)."""
        conditions = [self.held(job_id, token) for job_id, token in claims]
        if conditions:
            self.collection.update_many({"$or": conditions}, {"$set": {f"{LEASE_FIELD}.until": 0.0}})

    def flush(self) -> None:
        """Write the queued releases: one update, plus one delete only when a finished job's
        last run is among them."""
        batch = self.book.take_releases()
        if not batch:
            return
        conditions = [{**self.held(r.job_id, r.token), f"{LEASE_FIELD}.pending": r.fire_time} for r in batch]
        removals = [condition for condition, release in zip(conditions, batch) if release.removal]
        try:
            if removals:
                self.collection.delete_many({"$or": removals, f"{LEASE_FIELD}.remove": True})
            self.collection.update_many({"$or": conditions}, {"$unset": {LEASE_FIELD: ""}})
        except PyMongoError as exc:  # kept for the next flush; a lease also expires by itself
            self.book.requeue(batch)
            logger.warning("Could not release %d lease(s) (%s); retrying", len(batch), exc)

    def renew(self) -> None:
        """Extend the leases of runs going on here. A claim the loop has not written back is not
        renewed: a loop stuck longer than the lease loses it to another process."""
        running = self.book.running_ids()
        if running:
            self.collection.update_many(
                {"_id": {"$in": running}, f"{LEASE_FIELD}.holder": self.holder},
                {"$set": {f"{LEASE_FIELD}.until": time.time() + self.lease}},
            )


def _unchanged(document: dict[str, Any]) -> dict[str, Any]:
    """The document as it was read: same id, same write revision (a stock document has none)."""
    revision = document.get(REVISION_FIELD)
    return {"_id": document["_id"], REVISION_FIELD: revision if revision is not None else {"$exists": False}}


def _spread(free: list[Any], rank: int, width: int) -> list[Any]:
    """``free`` starting at this holder's offset: holders claiming at once pick different jobs."""
    if width <= 1 or len(free) <= 1:
        return free
    return [
        free[index] for offset in range(width) for index in range((rank + offset) % width, len(free), width)
    ]


def _late(document: dict[str, Any], now: float) -> bool:
    """A claimable job has waited long enough that anyone should claim it."""
    index = _number(document.get("next_run_time"))
    return index is not None and index <= now - _STEAL_AFTER


def _number(value: Any) -> float | None:
    return float(value) if type(value) is float or _integer(value) else None


def _integer(value: Any) -> bool:
    """An integer as pymongo reads one (``int`` or ``bson.Int64``), not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)
