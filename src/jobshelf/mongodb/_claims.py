"""Claims: the MongoDB operations on leases of one shared store instance.

A claim pass (``get_due_jobs``), in two round trips however many jobs are due:

1. one ``find`` reads the due jobs by the ``next_run_time`` index (and, while other processes are
   live or a takeover may be waiting, one more reads the runs in flight by the ``lease.pending``
   index): what a pass costs follows the due jobs, not the collection;
2. this instance picks its share (see :meth:`Claims.claim_due`) and claims it with one
   ``update_many`` per kind (free jobs get a whole new lease; a dead or expired holder's pending
   fire time, or this instance's own running job due again, keeps its ``pending``), conditioned on
   each document still holding the lease token and the write revision it was read with; only if
   another process took some meanwhile, one ``find`` by id reads back which are ours.

Every filter is an equality, a range or an ``$in`` on an indexed field, so servers with simple
query planners (NX-27017) use their indexes too. Releases (runs that are over) are written in
batches by the upkeep thread; renewals extend the leases of running jobs.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from ._fields import FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD, is_integer
from ._leases import LEASE_FIELD, ClaimBook, Lease, is_held_by_others, read_lease

__all__ = ["ClaimedJob", "Claims", "Found", "LeaseUpkeep"]

logger = logging.getLogger("jobshelf.shared")

#: The most documents one claim pass reads.
_MAX_FIND = 500
#: A due job nobody has claimed for this long (seconds) is claimed even beyond this instance's share.
_STEAL_AFTER = 0.25
#: A job picked and not claimed is not tried again for this long (seconds).
_REFUSED_FOR = 1.0
#: Releases wait this long (seconds) for others to be written with them.
_RELEASE_BATCH = 0.4
#: Runs in flight are read at least this often (seconds) to find a takeover waiting.
_ABANDONED_CHECK = 5.0
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
    :param accepts: whether a stored format tag is one this store decodes
    """

    def __init__(self, collection: Any, holder: str, lease: float, *, book: ClaimBook, registry: Any,
                 projection: list[str], accepts: Any) -> None:  # fmt: skip
        self.collection = collection
        self.holder = holder
        self.lease = lease
        self.book = book
        self.registry = registry
        self._accepts = accepts
        self._projection = [*projection, FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD, "next_run_time",
                            LEASE_FIELD]  # fmt: skip
        #: what the last pass found: the earliest expiry of another holder's lease, and whether
        #: it left claimable jobs to other processes
        self.held_expiry = math.inf
        self.left_behind = False
        #: id -> until when (time.monotonic()) it is not tried again: picked, and the claim did
        #: not match (another process was quicker, or a malformed lease the server counts as held)
        self._refused: dict[Any, float] = {}
        #: runs in flight are read next at this time.monotonic() (or at once after a death)
        self.next_abandoned_check = 0.0

    # ------------------------------------------------------------------------- filters

    def held(self, job_id: Any, token: int) -> dict[str, Any]:
        """The filter for ``job_id`` while this instance holds claim ``token`` (a later claim of
        the same job, by anyone, has another token: nothing done for this one touches it)."""
        return {"_id": job_id, f"{LEASE_FIELD}.holder": self.holder, f"{LEASE_FIELD}.token": token}

    def _held_all(self, claims: Iterable[tuple[Any, int]]) -> dict[str, Any] | None:
        """:meth:`held` for several claims in one filter (tokens are random and unique per claim,
        so pairing ids and tokens by ``$in`` matches exactly these claims)."""
        pairs = list(claims)
        if not pairs:
            return None
        return {
            "_id": {"$in": [job_id for job_id, _ in pairs]},
            f"{LEASE_FIELD}.holder": self.holder,
            f"{LEASE_FIELD}.token": {"$in": [token for _, token in pairs]},
        }

    def lease_fields(self, token: int, fire_time: float, *, remove: bool = False) -> dict[str, Any]:
        """The whole lease the holder writes back with a job whose run goes on."""
        lease: dict[str, Any] = {"holder": self.holder, "until": time.time() + self.lease, "token": token,
                                 "pending": fire_time}  # fmt: skip
        if remove:
            lease["remove"] = True
        return {LEASE_FIELD: lease}

    def waits_for(self, document: dict[str, Any], now: float) -> bool:
        """True when a scheduler should wait for this job at its next run time: it is not already
        due and held by a live holder (running elsewhere), and its format is this store's."""
        if not self._accepts(document.get(FORMAT_FIELD)) or QUARANTINE_FIELD in document:
            return False
        index = _number(document.get("next_run_time"))
        lease = read_lease(document.get(LEASE_FIELD))
        overdue_elsewhere = (
            index is not None
            and index <= now
            and is_held_by_others(lease, now, self.holder, self.registry.dead)
        )
        return not overdue_elsewhere

    # ------------------------------------------------------------------------- claiming

    def claim_due(self, timestamp: float, limit: int) -> tuple[list[Found], dict[Any, ClaimedJob]]:
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
        wanted = min(_MAX_FIND, limit * width + 8)
        documents = self._read(timestamp, now, wanted, running=width > 1)
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

    def _read(self, timestamp: float, now: float, wanted: int, *, running: bool) -> Iterator[dict[str, Any]]:
        """The due jobs; and the runs in flight when other processes are live (their share) or a
        takeover may be waiting (a holder died, or a lease may have expired)."""
        due = {"next_run_time": {"$lte": timestamp}}
        seen = set()
        for document in self.collection.find(due, self._projection, sort=_SORT, limit=wanted):
            seen.add(document.get("_id"))
            yield document
        clock = time.monotonic()
        if running or self.registry.dead or clock >= self.next_abandoned_check:
            self.next_abandoned_check = clock + min(_ABANDONED_CHECK, self.lease / 4)
            pending = {f"{LEASE_FIELD}.pending": {"$lte": now}}
            for document in self.collection.find(pending, self._projection, limit=wanted):
                if document.get("_id") not in seen:
                    yield document

    def _classify(self, documents: Iterable[dict[str, Any]], timestamp: float, now: float) -> _Seen:
        """Sort what a claim pass read: free due jobs, pending fire times to keep (a dead or
        expired holder's, or this instance's own running job due again), and others' runs."""
        me, dead = self.holder, self.registry.dead
        seen = _Seen()
        if self._refused:
            clock = time.monotonic()
            self._refused = {key: until for key, until in self._refused.items() if until > clock}
        for document in documents:
            job_id, revision = document.get("_id"), document.get(REVISION_FIELD)
            if not (type(job_id) is str or is_integer(job_id)) or not (
                revision is None or is_integer(revision)
            ):
                continue  # no claim condition can name it safely: left alone
            if QUARANTINE_FIELD in document or not self._accepts(document.get(FORMAT_FIELD)):
                continue  # out of the schedule, or another store's
            if job_id in self._refused:
                seen.elsewhere += 1
                continue
            lease = read_lease(document.get(LEASE_FIELD))
            index = _number(document.get("next_run_time"))
            due = index is not None and index <= timestamp
            if lease is not None and lease.holder == me:
                if self.book.is_claimed(job_id):
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
        """Claim the picked jobs, each only if it still holds the lease token and the revision it
        was read with (so nobody claimed or changed it meanwhile): free ones get a whole new lease,
        kept ones keep their ``pending``."""
        me = self.holder
        token = secrets.randbits(62)
        matched = 0
        if free:
            new_lease = {"holder": me, "until": now + self.lease, "token": token}
            whole: dict[str, Any] = {"$set": {LEASE_FIELD: new_lease}}
            plain = [(document, lease) for document, lease in free if _odd_lease(document) is None]
            if plain:
                matched += self.collection.update_many(_unchanged(plain), whole).matched_count
            for document, _ in free:  # a malformed lease: matched by its shape, one by one
                shape = _odd_lease(document)
                if shape is not None:
                    condition = {**_unchanged([(document, None)], tokens=False), **shape}
                    matched += self.collection.update_one(condition, whole).matched_count
        if kept:
            until = now + self.lease
            fields: dict[str, Any] = {"$set": {f"{LEASE_FIELD}.holder": me, f"{LEASE_FIELD}.until": until,
                                               f"{LEASE_FIELD}.token": token}}  # fmt: skip
            matched += self.collection.update_many(_unchanged(kept), fields).matched_count
        picked: list[tuple[dict[str, Any], Lease | None]] = [*kept, *free]
        if matched < len(picked):  # another process took some meanwhile: which are ours?
            ids = [document["_id"] for document, _ in picked]
            ours = {
                d["_id"]
                for d in self.collection.find({"_id": {"$in": ids}}, [LEASE_FIELD])
                if (lease := read_lease(d.get(LEASE_FIELD))) is not None and lease.token == token
            }
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

    def released(self) -> dict[str, Any]:
        """A released lease: expired, so free for anyone; written under this holder's name, so its
        own change stream does not report it back."""
        return {LEASE_FIELD: {"holder": self.holder, "until": 0.0}}

    def release_now(self, claims: Iterable[tuple[Any, int]]) -> None:
        """Release claims handed to nobody (a job skipped as not due, or quarantined)."""
        condition = self._held_all(claims)
        if condition is not None:
            self.collection.update_many(condition, {"$set": self.released()})

    def expire(self, claims: Iterable[tuple[Any, int]]) -> None:
        """Let other processes take these claims over at once (their pending fire times run
        there): claims this instance will not start (its executor refused them, or it is
        shutting down)."""
        condition = self._held_all(claims)
        if condition is not None:
            self.collection.update_many(condition, {"$set": {f"{LEASE_FIELD}.until": 0.0}})

    def flush(self) -> None:
        """Write the queued releases: one update, plus one delete only when a finished job's
        last run is among them."""
        batch = self.book.take_releases()
        if not batch:
            return
        condition = self._held_all((r.job_id, r.token) for r in batch)
        removals = self._held_all((r.job_id, r.token) for r in batch if r.removal)
        try:
            if removals is not None:
                self.collection.delete_many({**removals, f"{LEASE_FIELD}.remove": True})
            if condition is not None:
                self.collection.update_many(condition, {"$set": self.released()})
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


#: BSON type names of values a malformed lease token can hold (others: the job is left alone).
_BSON_TYPES = {float: "double", str: "string", dict: "object", list: "array", bool: "bool", bytes: "binData"}


def _odd_lease(document: dict[str, Any]) -> dict[str, Any] | None:
    """For a lease whose token no ``$in`` list can name (an array of leases, a token of another
    type), the condition that it still has that shape: whoever claims it meanwhile writes a
    lease with an integer token, which does not match. ``None`` for every other lease."""
    value = document.get(LEASE_FIELD)
    if isinstance(value, list):
        return {LEASE_FIELD: {"$type": "array"}}
    if isinstance(value, dict):
        token = value.get("token")
        if token is None or is_integer(token):
            return None
        return {f"{LEASE_FIELD}.token": {"$type": _BSON_TYPES.get(type(token), "minKey")}}
    return None


def _unchanged(picked: list[tuple[dict[str, Any], Any]], *, tokens: bool = True) -> dict[str, Any]:
    """The picked documents, only while each still holds the lease token and the write revision
    it was read with. Tokens and revisions are random and unique, so ``$in`` lists pair them with
    their documents exactly; ``None`` in a list matches a document that had none (no lease, a
    lease without a token, a document the stock store wrote)."""
    revisions = {document.get(REVISION_FIELD) for document, _ in picked}
    condition: dict[str, Any] = {
        "_id": {"$in": [document["_id"] for document, _ in picked]},
        REVISION_FIELD: {"$in": sorted(revisions, key=repr)},
    }
    if tokens:
        condition[f"{LEASE_FIELD}.token"] = {"$in": sorted({_token(d) for d, _ in picked}, key=repr)}
    return condition


def _token(document: dict[str, Any]) -> Any:
    """The lease token as stored: an integer, or ``None`` (no lease, or a lease without one)."""
    value = document.get(LEASE_FIELD)
    token = value.get("token") if isinstance(value, dict) else None
    return token if is_integer(token) else None


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
    return float(value) if type(value) is float or is_integer(value) else None


class LeaseUpkeep(threading.Thread):
    """A shared store's lease writes in the background: releases written in batches as runs end
    (waiting up to 0.4 s for others to go with them), running leases renewed every ``lease / 3``.

    :param claims: the lease operations
    """

    def __init__(self, claims: Claims) -> None:
        super().__init__(name=f"jobshelf-leases-{claims.collection.full_name}", daemon=True)
        self._claims = claims
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self._claims.book.releases_queued.set()  # wake the thread

    def run(self) -> None:
        claims = self._claims
        book = claims.book
        renew_every = claims.lease / 3
        next_renewal = time.monotonic() + renew_every
        while not self._halt.is_set():
            if (
                book.releases_queued.wait(max(0.0, next_renewal - time.monotonic()))
                and not self._halt.is_set()
            ):
                # runs that end close together are released in one write
                self._halt.wait(max(0.0, book.first_release_at + _RELEASE_BATCH - time.monotonic()))
            try:
                claims.flush()
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    claims.renew()
            except PyMongoError as exc:  # releases are kept and retried; leases also expire
                logger.warning("%s: lease upkeep failed (%s); retrying", claims.collection.full_name, exc)
                self._halt.wait(1)
            except Exception:  # never die: releases would wait for the next claim pass
                logger.exception("%s: lease upkeep failed; retrying", claims.collection.full_name)
                self._halt.wait(1)
