"""Liveness: every shared store instance checks in about every second; one that stops is dead
within seconds, and its claims are taken over at once, whatever its leases say.

One record per started store instance, in the sibling collection ``<jobs collection>_holders``::

    {_id: holder id, seen: <the server's time at its last check-in>, beat: <count>,
     host, pid, running: <runs in flight>, started}

Staleness is judged on the server's clock: ``seen`` is set by the server (``$currentDate``),
and an observer compares every record's ``seen`` with its own, written by the server just before,
so no host's clock takes part. A holder is dead when its record is more than ``dead_after``
seconds behind the observer's and has not changed in the observer's reads for three quarters of
``dead_after`` (a live holder's check-in changes it every second, whatever another writer puts
in ``seen``: a record rewritten to look stale is not enough), or when it holds leases and has no
record at all (a forged holder, or one whose record was cleaned up). A record that goes back in
time (``seen`` or ``beat`` smaller than before) was written by someone else: the observer says so
once. A record is deleted by its owner at shutdown and by anyone once it has been stale for a
minute.

The :class:`Heartbeat` thread does this, and nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from ._fields import is_integer
from ._leases import LEASE_FIELD

__all__ = [
    "HOLDERS_SUFFIX",
    "Heartbeat",
    "HolderRecord",
    "HolderRegistry",
    "holder_id",
    "read_records",
    "server_time",
]

logger = logging.getLogger("jobshelf.shared")

#: The liveness collection is the jobs collection's name plus this.
HOLDERS_SUFFIX = "_holders"
#: Records stale this long (seconds) are deleted by whoever sees them.
_FORGET_AFTER = 60.0
#: The most holder records and unknown holders kept in memory.
_MAX_HOLDERS = 1000


class HolderRecord(NamedTuple):
    """A shared store instance's liveness record, as read (fields ``None`` when malformed).

    :ivar holder: its holder id (``host:pid:random``)
    :ivar host: the host it runs on
    :ivar pid: its process id
    :ivar seen: the server's time at its last check-in (aware, UTC)
    :ivar running: the runs it had in flight at its last check-in
    :ivar alive: its last check-in is at most ``dead_after`` seconds older than the newest record's
        (or than the reader's own check-in)
    """

    holder: Any
    host: str | None
    pid: int | None
    seen: dt.datetime | None
    running: int | None
    alive: bool


def read_records(collection: Any, dead_after: float, now: dt.datetime | None = None) -> list[HolderRecord]:
    """Every liveness record of a jobs collection, judged on the server's clock: against ``now``
    (a server time) or, without it, against the newest check-in among them."""
    records = list(collection.database[collection.name + HOLDERS_SUFFIX].find().limit(_MAX_HOLDERS))
    seen = {id(r): _aware(r.get("seen")) for r in records}
    newest = (
        _aware(now) if now is not None else max((t for t in seen.values() if t is not None), default=None)
    )
    found = []
    for record in records:
        when = seen[id(record)]
        host, pid, running = record.get("host"), record.get("pid"), record.get("running")
        alive = when is not None and newest is not None and abs((newest - when).total_seconds()) <= dead_after
        found.append(
            HolderRecord(
                record.get("_id"),
                host if type(host) is str else None,
                int(pid) if is_integer(pid) else None,
                when,
                int(running) if is_integer(running) else None,
                alive,
            )
        )
    return sorted(found, key=lambda r: (not r.alive, str(r.holder)))


def server_time(collection: Any) -> dt.datetime | None:
    """The server's clock now (``localTime`` of the ``hello`` reply), or ``None`` if it does not
    say: what a reader that never checked in judges the records against."""
    try:
        reply = collection.database.client.admin.command("hello")
    except PyMongoError as exc:
        logger.debug("could not read the server's time: %s", exc)
        return None
    return _aware(reply.get("localTime")) if isinstance(reply, dict) else None


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return (
        value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    )


def _went_back(was: tuple[Any, Any], now: tuple[Any, Any]) -> bool:
    """A record read again holds an earlier check-in (``seen`` or ``beat`` smaller): jobshelf
    never writes that."""
    for before, after in zip(was, now):
        try:
            if after < before:
                return True
        except Exception:  # values of other types (a beat forged as a string): not comparable
            continue
    return False


def _short(value: Any) -> str:
    """A stored value for a log line, at most 200 characters (any BSON value can be there)."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def holder_id() -> str:
    """``host:pid:random``: unique per started store instance (and per process), readable by
    operators. Computed at ``start()``, in the process that runs the scheduler."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class HolderRegistry:
    """The liveness records: this instance's check-in, and which other holders are live or dead.

    :param jobs: the jobs collection (the records live beside it)
    :param holder: this instance's holder id
    :param dead_after: seconds without a check-in after which a holder is dead
    """

    def __init__(self, jobs: Any, holder: str, dead_after: float) -> None:
        self.jobs = jobs
        self.records = jobs.database[jobs.name + HOLDERS_SUFFIX]
        self.holder = holder
        self.dead_after = dead_after
        #: holders taken for dead (stale records, and holders of leases without a record)
        self.dead: frozenset[str] = frozenset()
        #: live holders, this one included, sorted
        self.live: tuple[str, ...] = (holder,)
        #: some live holder missed a check-in: look again soon
        self.suspicious = False
        self._stale: frozenset[str] = frozenset()
        self._unknown: frozenset[str] = frozenset()
        self._server_now: Any = None
        self._checked_in_at: float | None = None  # time.monotonic() of the last check-in
        self._beat = 0  # this instance's check-ins so far (written as ``beat``)
        #: holder -> ((seen, beat) as last read, when it last changed: time.monotonic() of the
        #: read before the one that found it changed, or a quarter of dead_after before that one)
        self._changes: dict[str, tuple[tuple[Any, Any], float]] = {}
        self._read_at: float | None = None  # time.monotonic() of the last read of the records
        self._tampered: set[str] = set()  # holders whose record went back in time (said once)

    def check_in(self, running: int) -> None:
        """Write this instance's record (the server stamps ``seen``); warn when the previous
        check-in is so long ago that others may have taken this process for dead."""
        self._beat += 1
        record = self.records.find_one_and_update(
            {"_id": self.holder},
            {
                "$currentDate": {"seen": True},
                # set, not $inc: a value another writer left there (a string, a document) must not
                # make every check-in fail
                "$set": {"host": socket.gethostname(), "pid": os.getpid(), "running": running,
                         "beat": self._beat},
                "$setOnInsert": {"started": dt.datetime.now(dt.timezone.utc)},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection=["seen"],
        )
        now = time.monotonic()
        if self._checked_in_at is not None and now - self._checked_in_at > self.dead_after:
            logger.warning(
                "%s: this process (holder %s) could not check in for %.1fs (paused, overloaded or cut "
                "off from the database): other processes may have taken it for dead and run its "
                "claimed jobs; its own late writes of those jobs are refused",
                self.jobs.full_name, self.holder, now - self._checked_in_at,
            )  # fmt: skip
        self._checked_in_at = now
        seen = record.get("seen") if isinstance(record, dict) else None
        self._server_now = seen if isinstance(seen, dt.datetime) else None

    @property
    def server_now(self) -> Any:
        """The server's time at this instance's last check-in (``None`` before the first)."""
        return self._server_now

    def observe(self) -> frozenset[str]:
        """Read every record: which holders are live, which dead. Returns the newly dead ones.

        "Now" is the server's time at this instance's last check-in plus the time elapsed here
        since (a monotonic clock over at most a second or two: no skew between hosts takes part).
        A record behind by more than ``dead_after`` is dead only once it has also stayed the
        same in these reads for three quarters of ``dead_after`` (see the module's docstring).
        """
        if self._server_now is None or self._checked_in_at is None:
            return frozenset()
        clock = time.monotonic()
        now = self._server_now + dt.timedelta(seconds=clock - self._checked_in_at)
        before, self._read_at = (self._read_at if self._read_at is not None else clock), clock
        unchanged_for = 0.75 * self.dead_after
        recent = clock - self.dead_after / 4
        live, stale = {self.holder}, set[str]()
        suspicious = False
        changes: dict[str, tuple[tuple[Any, Any], float]] = {}
        for record in self.records.find({}, ["seen", "beat"]).limit(_MAX_HOLDERS):
            holder, seen = record.get("_id"), record.get("seen")
            if type(holder) is not str or holder == self.holder or not isinstance(seen, dt.datetime):
                continue  # not a record jobshelf wrote: its holder counts as unknown
            value = (seen, record.get("beat"))
            known = self._changes.get(holder)
            # a change found now happened after the previous read; if that read is long ago (this
            # thread was held up), count it from a quarter of dead_after back: a sign of life
            changed_at = max(before, recent) if known is None or known[0] != value else known[1]
            if known is not None and _went_back(known[0], value):
                self._say_tampered(holder, known[0], value)
            changes[holder] = (value, changed_at)
            try:
                behind = (now - seen).total_seconds()
            except TypeError:  # naive against aware: a record written by another client setting
                continue
            if behind > self.dead_after and clock - changed_at >= unchanged_for:
                stale.add(holder)
            elif behind >= -self.dead_after:  # a check-in from the future is no check-in
                live.add(holder)
                suspicious = suspicious or behind > self.dead_after / 2 + 0.25  # a check-in missed
        self._changes = changes
        self.live = tuple(sorted(live))
        self.suspicious = suspicious
        newly = frozenset(stale - self._stale)
        self._stale = frozenset(stale)
        self._unknown = self._unknown - live
        self.dead = self._stale | self._unknown
        return newly

    def _say_tampered(self, holder: str, was: tuple[Any, Any], now: tuple[Any, Any]) -> None:
        if holder in self._tampered or len(self._tampered) >= _MAX_HOLDERS:
            return
        self._tampered.add(holder)
        logger.warning(
            "%s: the liveness record of holder %r went back in time (seen, beat: %s, then %s): "
            "something other than jobshelf writes %s; a holder is taken for dead only when its "
            "record also stops changing, but a writer that keeps it still can still make a live "
            "process look dead. Find and stop that writer",
            self.jobs.full_name, holder, _short(was), _short(now), self.records.full_name,
        )  # fmt: skip

    def scan_unknown(self) -> frozenset[str]:
        """Holders of leases that have no record (forged, or cleaned up): dead. Returns the newly
        found ones. Records are read again after the leases, so a holder that started meanwhile
        (it checks in before it claims) is never among them."""
        holders = {h for h in self.jobs.distinct(f"{LEASE_FIELD}.holder") if type(h) is str}
        holders.discard(self.holder)
        if not holders:
            return frozenset()
        recorded = {record.get("_id") for record in self.records.find({}, ["_id"]).limit(_MAX_HOLDERS)}
        unknown = frozenset(sorted(holders - recorded)[:_MAX_HOLDERS])
        newly = unknown - self._unknown
        self._unknown = unknown
        self.dead = self._stale | self._unknown
        return newly

    def forget_stale(self) -> None:
        """Delete records stale for a minute (their holders' claims are taken over by then)."""
        if self._server_now is not None:
            cutoff = self._server_now - dt.timedelta(seconds=max(_FORGET_AFTER, 10 * self.dead_after))
            self.records.delete_many({"seen": {"$lt": cutoff}})

    def leave(self) -> None:
        """Delete this instance's record: other processes take its remaining claims over at once."""
        self.records.delete_one({"_id": self.holder})


class Heartbeat(threading.Thread):
    """A shared store's liveness thread, doing nothing else (so that slow lease writes never delay
    a check-in): its check-in about every second, and the detection of dead holders
    (:class:`HolderRegistry`): their records are read every second while others are live, every
    0.1 s while one has missed a check-in, and every third second when alone.

    :param registry: the liveness records
    :param running: how many runs this instance has in flight (written with each check-in)
    :param on_dead: called with newly dead holders (takes their claims over)
    :param lease: the lease, seconds (holders of leases without a record are looked for this often)
    """

    def __init__(self, registry: HolderRegistry, running: Callable[[], int],
                 on_dead: Callable[[frozenset[str]], None], lease: float) -> None:  # fmt: skip
        super().__init__(name=f"jobshelf-heartbeat-{registry.jobs.full_name}", daemon=True)
        self._registry = registry
        self._running = running
        self._on_dead = on_dead
        self._lease = lease
        self._halt = threading.Event()
        self._beat = min(1.0, registry.dead_after / 2)

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        registry = self._registry
        now = time.monotonic()
        next_beat = next_observe = now
        next_scan = now + self._beat  # after the first check-in and observation
        next_cleanup = now + _FORGET_AFTER / 2
        beats = 0
        while not self._halt.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self._beat
                    registry.check_in(self._running())
                    beats += 1
                if now >= next_observe:
                    newly_dead = registry.observe()
                    alone = len(registry.live) == 1 and not registry.dead
                    if registry.suspicious:  # a holder missed a check-in: is it dead?
                        next_observe = now + 0.1
                    else:  # a newcomer checks in before it claims anything: alone, look less often
                        next_observe = now + (self._beat * 3 if alone and beats > 2 else self._beat)
                    self._report(newly_dead, f"stopped checking in (dead for {registry.dead_after}s)")
                if now >= next_scan:
                    next_scan = now + self._lease
                    self._report(registry.scan_unknown(), "holds leases but has no liveness record")
                if now >= next_cleanup:
                    next_cleanup = now + _FORGET_AFTER / 2
                    registry.forget_stale()
            except PyMongoError as exc:
                logger.warning("%s: liveness check-in failed (%s); retrying", registry.jobs.full_name, exc)
            except Exception:  # never let the heartbeat die: this process would look dead to others
                logger.exception("%s: liveness check-in failed; retrying", registry.jobs.full_name)
            self._halt.wait(max(0.0, min(next_beat, next_observe) - time.monotonic()))

    def _report(self, newly_dead: frozenset[str], why: str) -> None:
        if newly_dead:
            logger.warning(
                "%s: holder%s %s %s; taking over its claimed jobs",
                self._registry.jobs.full_name, "" if len(newly_dead) == 1 else "s",
                ", ".join(sorted(newly_dead)), why,
            )  # fmt: skip
            self._on_dead(newly_dead)
