"""``MongoDBJobStore``: a drop-in replacement for APScheduler 3's ``MongoDBJobStore``.

It speaks MongoDB only: documents, indexes, queries and pymongo's errors. Everything else (formats,
decoding, quarantine decisions, the allow-list, outages) is the store core's
(:class:`jobshelf._store.StoreCore`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from apscheduler.job import Job
from apscheduler.util import maybe_ref

from .._core import (
    CORE_OPTIONS,
    DEFAULT_MAX_STATE_BYTES,
    UNTAGGED_FORMAT,
    MalformedTag,
    Row,
    StoreCore,
    StoredJob,
    WriteRecord,
    check_unknown,
)
from .._core.history import DEFAULT_HISTORY_BUFFER, DEFAULT_HISTORY_TTL
from .._core.options import as_bool, as_number
from .._core.reading import as_timestamp
from .._exceptions import JobshelfError, SerializationError
from .._serializer import SerializerSpec
from . import _forking
from ._concurrent import ConcurrentChanges
from ._fields import FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD, is_integer
from ._history import MongoHistorySink
from ._leases import LEASE_FIELD, WriteMode
from ._liveness import HolderRecord, read_records, server_time
from ._registration import definition_difference
from ._shared import DEFAULT_CLAIM_LIMIT, DEFAULT_DEAD_AFTER, SharedMode

try:
    from bson.binary import Binary
    from pymongo import ASCENDING, MongoClient
    from pymongo.common import validate as _pymongo_validate
    from pymongo.errors import ConnectionFailure, DocumentTooLarge, DuplicateKeyError
except ImportError as exc:  # pragma: no cover - pymongo is a dependency
    raise ImportError("jobshelf.MongoDBJobStore requires pymongo: pip install pymongo") from exc

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD", "MongoDBJobStore"]

_shared_logger = logging.getLogger("jobshelf.shared")

_SORT = [("next_run_time", ASCENDING), ("_id", ASCENDING)]
# The earliest job: by time alone (a second sort key makes some servers sort the whole collection).
_BY_TIME = [("next_run_time", ASCENDING)]
#: Every option of MongoDBJobStore itself (anything else goes to MongoClient).
_OPTIONS = CORE_OPTIONS | {"database", "collection", "client", "shared", "lease", "recheck", "dead_after",
                          "claim_limit"}  # fmt: skip
#: shared mode's options and their defaults
_SHARED_DEFAULTS = {
    "lease": 30,
    "recheck": 1.0,
    "dead_after": DEFAULT_DEAD_AFTER,
    "claim_limit": DEFAULT_CLAIM_LIMIT,
}
#: The longest lease, dead_after and recheck (seconds): a year.
_MAX_SECONDS = 365 * 86400.0
#: The shortest lease (seconds): a claim is not renewed until the loop writes its job back.
_MIN_LEASE = 1.0
#: MongoClient's own parameters (its other options are checked with pymongo's validator).
_CLIENT_PARAMETERS = frozenset({"host", "port", "document_class", "tz_aware", "connect", "type_registry"})
_STORED_PROJECTION = ["next_run_time", "job_state", FORMAT_FIELD, QUARANTINE_FIELD]
# What reads need (each projected field costs on some servers). The revision is read again, with
# the state, when a job has to be quarantined.
_READ_PROJECTION = ["job_state", FORMAT_FIELD, QUARANTINE_FIELD]
_QUARANTINE_PROJECTION = ["job_state", FORMAT_FIELD, REVISION_FIELD, QUARANTINE_FIELD]
# Shared mode: a finished job waiting for its last run to be reported, then deleted.
_NOT_FINISHING = {f"{LEASE_FIELD}.remove": {"$ne": True}}
# A field of every quarantine record (its error's public name, a string), indexed to count them.
_QUARANTINE_KEY = f"{QUARANTINE_FIELD}.error_type"
# The earliest job is looked for in pages of these sizes (most often it is the first document),
# within these many seconds from now (a window widened until a job is found).
_EARLIEST_PAGES = (4, 64, 512)
_EARLIEST_WINDOWS = (60.0, 3600.0, 7 * 86400.0, float("inf"))
_EARLIEST_PROJECTION = ["next_run_time", FORMAT_FIELD, LEASE_FIELD, QUARANTINE_FIELD]


class MongoDBJobStore(StoreCore):
    """Stores jobs in a MongoDB collection, encoded by a pluggable serializer.

    A drop-in replacement for :class:`apscheduler.jobstores.mongodb.MongoDBJobStore`: the same
    constructor, the same documents (``_id``, ``next_run_time`` as a float UTC timestamp or
    ``None``, ``job_state`` as Binary — or a string for a text serializer such as JSON) plus
    ``job_state_format`` (the format) and ``job_state_rev`` (a write token), and the same contract.
    With the default pickle serializer ``job_state`` is byte-identical to the stock store's, so
    either store reads the other's documents. Any leftover keyword arguments go to
    :class:`pymongo.mongo_client.MongoClient`.

    A job that cannot be decoded is never deleted: it is quarantined (kept, taken out of the
    schedule, with the reason recorded under ``quarantine``) and a warning names it.

    Plugin alias: ``jobshelf``

    :param database: database to store jobs in
    :param collection: collection to store jobs in
    :param client: a :class:`~pymongo.mongo_client.MongoClient` (or a ``"module:var"`` reference
        to one) to use instead of creating one; a client passed in is not closed by
        :meth:`shutdown`
    :param pickle_protocol: pickle protocol of the default pickle serializer (anything
        :func:`pickle.dumps` takes, ``-1`` for the highest)
    :param serializer: how job state is encoded: ``None`` (pickle), a name (``"pickle"``,
        ``"cloudpickle"``, ``"msgpack"``, or one registered under the ``jobshelf.serializers``
        entry point group), a ``"module:attr"`` string, a class, or an object with
        ``dumps``/``loads``
    :param accept: the formats this store decodes; default: the serializer's own format (and
        untagged stock documents for pickle and cloudpickle). Jobs read in another accepted format
        are rewritten in the configured one when they are next updated.
    :param allowed_callables: module names (``"myapp.jobs"``: it and its submodules) or
        ``"module:qualname"`` patterns with wildcards that a stored job may call. A job outside the
        list is refused at ``add_job`` and quarantined when read, before its callable is resolved.
        ``None`` (default) allows every callable, as the stock store does.
    :param allow_by_value: with ``allowed_callables``, also accept callables stored by value
        (cloudpickle's lambdas and closures), which no allow-list can check before unpickling
    :param max_state_bytes: the largest encoded job state written (larger: ``SerializationError``)
        or decoded (larger: quarantined unread); default: what fits in a MongoDB document
    :param shared: several scheduler processes share this collection and each fire time runs once:
        due jobs are claimed with leases on their documents (see the README's "Shared scheduling")
    :param lease: seconds a claim lasts without renewal (shared mode; renewed while a job runs):
        the bound for a process that is alive but stuck
    :param recheck: seconds between checks for jobs added by other processes, where the server has
        no change streams (shared mode)
    :param dead_after: seconds without a liveness check-in after which a process is taken for dead
        and its claimed jobs run elsewhere, whatever their leases say (shared mode; each store
        instance checks in about every second)
    :param claim_limit: the most due jobs one loop pass claims (shared mode); a pass also claims
        no more than its scheduler's pool executors can start at once, and no more than its share
        of the due work among the live processes
    :param history: record every fire time's run in a sibling collection: ``True`` for
        ``<collection>_runs``, or its name (see :meth:`get_job_history`)
    :param history_ttl: seconds execution records are kept (a TTL index; default 7 days)
    :param history_buffer: the most execution records waiting while the server cannot be reached
    """

    transient_errors = (ConnectionFailure,)

    def __init__(
        self,
        database: str = "apscheduler",
        collection: str = "jobs",
        client: Any = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        *,
        serializer: SerializerSpec = None,
        accept: Iterable[SerializerSpec] | None = None,
        allowed_callables: Iterable[str] | None = None,
        allow_by_value: bool = False,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        shared: bool = False,
        lease: float | None = None,
        recheck: float | None = None,
        dead_after: float | None = None,
        claim_limit: int | None = None,
        history: bool | str = False,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        history_buffer: int = DEFAULT_HISTORY_BUFFER,
        **connect_args: Any,
    ) -> None:
        if not database:
            raise ValueError('The "database" parameter must not be empty')
        if not collection:
            raise ValueError('The "collection" parameter must not be empty')
        check_unknown(type(self).__name__, connect_args, _OPTIONS, passed_on=_is_client_option)
        shared = as_bool("shared", shared)
        given: dict[str, Any] = {"lease": lease, "recheck": recheck, "dead_after": dead_after,
                                 "claim_limit": claim_limit}  # fmt: skip
        if shared:  # what is not given takes its default (None: not given, so shared=False can tell)
            given = {n: _SHARED_DEFAULTS[n] if v is None else v for n, v in given.items()}
            for name in ("lease", "recheck", "dead_after"):
                given[name] = as_number(name, given[name], maximum=_MAX_SECONDS)
            if given["lease"] < _MIN_LEASE:
                raise ValueError(
                    f"lease must be at least {_MIN_LEASE:g} second, got {given['lease']!r}: a claim must "
                    "outlast a scheduler pass, or a fire time runs twice"
                )
            given["claim_limit"] = as_number("claim_limit", given["claim_limit"], integer=True)
        elif any(v is not None for v in given.values()):
            options = ", ".join(f"{n}={v!r}" for n, v in given.items() if v is not None)
            raise ValueError(
                f"{options} appl{'ies' if options.count('=') == 1 else 'y'} to shared mode only; pass "
                "shared=True (several schedulers share this collection) or leave them out"
            )
        super().__init__(
            serializer=serializer,
            accept=accept,
            pickle_protocol=pickle_protocol,
            allowed_callables=allowed_callables,
            allow_by_value=allow_by_value,
            max_state_bytes=max_state_bytes,
            history=history, history_ttl=history_ttl, history_buffer=history_buffer,
        )  # fmt: skip
        self.pickle_protocol = pickle_protocol
        self._binary_filters = True  # cleared on servers that cannot match binary values
        self.shared = shared
        self._shared: SharedMode | None = None
        if shared:
            self._shared = SharedMode(
                lease=float(given["lease"]),
                dead_after=float(given["dead_after"]),
                claim_limit=int(given["claim_limit"]),
                recheck=float(given["recheck"]),
                projection=_READ_PROJECTION,
            )
        self._owns_client = not client
        self._names = (database, collection)
        self._connect_args = connect_args
        if client:
            self.client = maybe_ref(client)
        else:
            connect_args.setdefault("w", 1)
            self.client = MongoClient(**connect_args)
        self.collection = self.client[database][collection]
        self._pid = os.getpid()  # the process that created the client
        self._forked_while_running = False
        _forking.register(self)

    def start(self, scheduler: Any, alias: str) -> None:
        """Create the indexes, check the formats and, in shared mode, check in and start watching
        for changes (under a holder id of this process: a store built before a fork works in each
        child that starts it)."""
        if _forking.forked_since(self._pid):
            self._after_fork_client()
        super().start(scheduler, alias)
        if self._shared is not None:
            self._shared.start(scheduler, alias, self.collection, earliest=self._earliest_time,
                               accepts=self.accepts)  # fmt: skip
            self._logger.info("%s: shared mode, holder %s, lease %ss, dead after %ss", self._where(),
                              self._shared.holder, self._shared.lease, self._shared.dead_after)  # fmt: skip

    def _after_fork_client(self) -> None:
        """This process was forked after the client was created: replace a client the store
        created; keep one passed in, saying how to create it after the fork."""
        parent, self._pid = self._pid, os.getpid()
        if self._owns_client:
            self.client = MongoClient(**self._connect_args)
            self.collection = self.client[self._names[0]][self._names[1]]
            self._logger.info("%s: process %d was forked from %d after this store was built; it uses a "
                              "MongoClient of its own", self._where(), self._pid, parent)  # fmt: skip
            return
        self._logger.warning(
            "%s: the MongoClient passed as client= was created in process %d, before this process (%d) "
            "was forked from it; pymongo resets its connections, but a client is not fork-safe. "
            "Create the client (and the store) after the fork, in each worker: gunicorn's post_fork "
            "hook (or no --preload), uWSGI's lazy-apps = true", self._where(), parent, self._pid,
        )  # fmt: skip

    def _after_fork_in_child(self) -> None:
        """``os.fork()`` hook, in the child: its parent's claims and threads are not its own."""
        if self._shared is not None:
            self._forked_while_running = self._shared.holder is not None
            self._shared.forked()

    @property
    def connection(self) -> Any:
        warnings.warn(
            'The "connection" member is deprecated -- use "client" instead',
            DeprecationWarning,
            stacklevel=2,
        )
        return self.client

    @property
    def wakeup_mode(self) -> str | None:
        """Shared mode: ``"change stream"`` or ``"re-check"`` (how other processes' jobs are noticed)."""
        return self._shared.wakeup_mode if self._shared is not None else None

    @property
    def holder(self) -> str | None:
        """Shared mode: this started store instance's holder id (``host:pid:random``), as its
        leases and its liveness record name it; ``None`` before ``start()``."""
        return self._shared.holder if self._shared is not None else None

    def holders(self) -> list[HolderRecord]:
        """Shared mode: every store instance that checks in on this collection, from the liveness
        records, each judged alive or dead on the server's clock (dead: no check-in for
        ``dead_after`` seconds), alive ones first.

        :raises ValueError: the store is not in shared mode
        """
        if self._shared is None:
            raise ValueError("holders() needs shared mode: MongoDBJobStore(shared=True)")
        registry = self._shared.registry
        now = registry.server_now if registry is not None else None
        if now is None:  # not started here: judged against the server's clock now, so that a
            now = server_time(self.collection)  # killed holder's record alone is not taken as alive
        return read_records(self.collection, self._shared.dead_after, now)

    def shutdown(self) -> None:
        """Shared mode: stop the threads, write the last releases, leave what was claimed and not
        started to other processes at once, and delete the liveness record. Then close the
        MongoClient if this store created it. The scheduler's last loop pass after this is answered
        quietly."""
        super().shutdown()
        if self._shared is not None:
            try:
                self._shared.stop()
            except Exception as exc:  # the database is gone: leases expire, the record goes stale
                self._logger.warning("%s: could not hand over the claims at shutdown (%s); other "
                                     "processes take them over when this one looks dead",
                                     self._where(), exc)  # fmt: skip
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} (client={self.client}, format={self.format!r})>"

    def _where(self) -> str:
        return f"collection {self.collection.full_name!r}"

    def _history_sink(self, name: str | None) -> MongoHistorySink:
        """Execution records in a sibling collection: ``<collection>_runs`` unless named."""
        database = self.collection.database
        return MongoHistorySink(database[name or f"{self.collection.name}_runs"], self.history_ttl)

    # ------------------------------------------------------------------------- reads

    def _prepare(self) -> None:
        self.collection.create_index("next_run_time", sparse=True)
        # start() finds the formats present, and counts quarantined jobs, by these (not by reading
        # every document); an index on the tag also indexes untagged documents, as null
        self.collection.create_index(FORMAT_FIELD)
        self.collection.create_index(_QUARANTINE_KEY, sparse=True)
        if self._shared is not None:
            # claims read due jobs and runs in flight by these, and read back what they got by token;
            # dead holders' leases are found by holder
            for field in ("pending", "token", "holder"):
                self.collection.create_index(f"{LEASE_FIELD}.{field}", sparse=True)

    def _fetch(self, job_id: str) -> Row | None:
        conditions: dict[str, Any] = {"_id": job_id}
        if self.shared:
            conditions.update(_NOT_FINISHING)
        document = self.collection.find_one(conditions, _QUARANTINE_PROJECTION)
        return _row(document) if document is not None else None

    def _fetch_due(self, timestamp: float) -> Iterable[Row]:
        if self._shared is not None:
            return self._shared.claim(timestamp, _row)
        documents = self.collection.find({"next_run_time": {"$lte": timestamp}}, _READ_PROJECTION, sort=_SORT)
        return map(_row, documents)

    def get_due_jobs(self, now: dt.datetime) -> list[Job]:
        """Jobs due at ``now`` by their decoded state; in shared mode, only those this store
        instance claimed (see the README's "Shared scheduling")."""
        jobs: list[Job] = super().get_due_jobs(now)
        if self._shared is not None:
            try:
                self._shared.after_due(jobs, now)
            except Exception as exc:  # never into the loop: the claims expire, or are released later
                self._logger.warning("%s: could not settle this pass's claims (%s)", self._where(), exc)
        return jobs

    def _fetch_all(self) -> Iterable[Row]:
        conditions = _NOT_FINISHING if self.shared else {}
        return map(_row, self.collection.find(conditions, _READ_PROJECTION, sort=_SORT))

    def _next_timestamp(self) -> float | None:
        timestamp = super()._next_timestamp()
        if self._shared is not None:
            return self._shared.plan(timestamp)
        return timestamp

    def _earliest(self, exclude: Collection[Any]) -> tuple[Any, Any] | None:
        """The earliest numeric ``next_run_time`` of a job in an accepted format (leaving out
        ``exclude``; in shared mode also the due jobs another live process is running).

        Read in small pages of the index's order, within a window that widens (a minute, an hour,
        a week, then everything) until a job is found: a bounded range with a limit is what every
        server answers from its index without sorting the whole collection. The rest is judged
        here."""
        claims = self._shared.claims if self._shared is not None else None
        now = time.time()
        document = None
        for ahead in _EARLIEST_WINDOWS:
            window: dict[str, Any] = {"next_run_time": {"$lte": now + ahead}}
            window[QUARANTINE_FIELD] = {"$exists": False}
            if exclude:  # rows the core will not run here (bounded by the core)
                window["_id"] = {"$nin": list(exclude)}
            for size in _EARLIEST_PAGES:
                page = list(self.collection.find(window, _EARLIEST_PROJECTION, sort=_BY_TIME, limit=size))
                for document in page:
                    if document.get("_id") in exclude:
                        continue
                    if claims is not None and not claims.waits_for(document, now):
                        continue
                    if claims is None and not self.accepts(document.get(FORMAT_FIELD)):
                        continue
                    return document.get("next_run_time"), document.get("_id")
                if len(page) < size:
                    break  # every job in the window read and left out: widen it
            else:
                if claims is None:  # more of another store's jobs than a page holds: ours only
                    ours = self.collection.find_one(
                        {**window, **self._accepted_filter()}, _EARLIEST_PROJECTION, sort=_BY_TIME
                    )
                    if ours is None:
                        continue
                    return ours.get("next_run_time"), ours.get("_id")
                # more jobs left out than a page holds (running elsewhere): wake at the last one read
                # rather than read further; the next pass looks again
                return (document.get("next_run_time"), document.get("_id")) if document is not None else None
        return None

    def _earliest_time(self) -> float | None:
        """The earliest next run time as stored (shared mode's re-check, without change streams)."""
        found = self._earliest(())
        return as_timestamp(found[0]) if found is not None else None

    def _format_counts(self, *, quarantined: bool) -> dict[Any, int]:
        match: dict[str, Any] = {"job_state": {"$exists": True}}
        if not quarantined:
            match[QUARANTINE_FIELD] = {"$exists": False}
        pipeline = [{"$match": match}, {"$group": {"_id": f"${FORMAT_FIELD}", "count": {"$sum": 1}}}]
        counts: dict[Any, int] = {}
        for row in self.collection.aggregate(pipeline):
            fmt = row["_id"]
            key = MalformedTag.of(fmt)
            counts[key] = counts.get(key, 0) + int(row["count"])
        return counts

    def _count_quarantined(self) -> int:
        # Through a sparse index on a field every quarantine record jobshelf writes holds (a string
        # range: servers use the index for it, not always for $exists): what it costs follows the
        # quarantined jobs. A record another program wrote without it is listed, not counted here.
        return sum(1 for _ in self.collection.find({_QUARANTINE_KEY: {"$gte": ""}}, ["_id"]))

    def _unaccepted_format_counts(self) -> dict[str, int]:
        """The formats present, from the index on the format tag (``distinct``), and counts of the
        scheduled jobs in those this store does not accept (the accepted ones are not counted)."""
        tags: list[Any] = [tag for tag in self.collection.distinct(FORMAT_FIELD) if type(tag) is str]
        if not self.accepts(None) and self.collection.find_one({FORMAT_FIELD: None}, ["_id"]) is not None:
            tags.append(None)  # untagged (stock pickle) documents
        counts: dict[str, int] = {}
        for tag in tags:
            if not self.accepts(tag):
                scheduled = {
                    FORMAT_FIELD: tag,
                    "job_state": {"$exists": True},
                    QUARANTINE_FIELD: {"$exists": False},
                }
                count = int(self.collection.count_documents(scheduled))
                if count:
                    counts[UNTAGGED_FORMAT if tag is None else tag] = count
        return counts

    def _fetch_quarantined(self, job_id: str | None) -> list[tuple[Row, dict[str, Any]]]:
        conditions: dict[str, Any] = {QUARANTINE_FIELD: {"$exists": True}}
        if job_id is not None:
            conditions["_id"] = job_id
        documents = self.collection.find(
            conditions,
            _QUARANTINE_PROJECTION,
            sort=[(f"{QUARANTINE_FIELD}.at", ASCENDING), ("_id", ASCENDING)],
        )
        found = []
        for document in documents:
            record = document.get(QUARANTINE_FIELD)
            found.append((_row(document), record if isinstance(record, dict) else {}))
        return found

    # ------------------------------------------------------------------------- writes

    def _insert(self, record: WriteRecord) -> bool:
        try:
            self.collection.insert_one(_document(record))
        except DuplicateKeyError:
            if self._shared is not None:  # APScheduler's replace_existing updates this job next
                self._shared.marks.mark(record.id, record.data)
            return False
        except DocumentTooLarge as exc:
            raise _too_large(record, exc) from exc
        return True

    def _looked_up(self, row: Row, next_run_time: float | None) -> None:
        if self._shared is not None:
            self._shared.lookups.mark(row.id, row.revision, next_run_time)

    def _concurrent(self) -> ConcurrentChanges:
        return ConcurrentChanges(self.collection, decode=self._decode_state, encode=self._encode_merged,
                                 document=_document)  # fmt: skip

    def _encode_merged(self, state: dict[str, Any], stored_format: Any) -> WriteRecord:
        """A merged state (see :mod:`._concurrent`), in this store's format, else in the stored one."""
        try:
            return self._encode_state(state, self._format)
        except SerializationError:
            stored = self._formats.get(stored_format) if type(stored_format) is str else None
            if stored is None or stored is self._format:
                raise
            return self._encode_state(state, stored)

    def _replace(self, record: WriteRecord) -> bool:
        document = _document(record)
        del document["_id"]
        condition: dict[str, Any] = {"_id": record.id}
        update: dict[str, Any] = {"$set": document, "$unset": {QUARANTINE_FIELD: ""}}
        shared = self._shared
        write = shared.begin_write(record.id, in_loop=self._in_loop()) if shared is not None else None
        lease: dict[str, Any] = {}
        if write is not None and shared is not None and shared.claims is not None:
            if write.mode is WriteMode.APPLICATION:
                looked = shared.lookups.take(record.id)
                if shared.marks.take(record.id, record.data) and self._registered_unchanged(record):
                    return True  # the same job registered again: the stored schedule and lease stand
                update["$unset"][LEASE_FIELD] = ""  # an application's change releases any lease
                if looked is not None and is_integer(looked.revision):
                    return self._replace_looked_up(record, condition, update, looked)
            else:  # the holder, after submitting: only while it holds the lease
                condition = shared.claims.held(record.id, write.token)
                if write.mode is WriteMode.RUN_OVER:
                    lease = shared.claims.released()
                else:
                    lease = shared.claims.lease_fields(write.token, write.first)
                document.update(lease)
        elif write is not None and write.mode is WriteMode.APPLICATION:
            update["$unset"][LEASE_FIELD] = ""
        try:
            matched = bool(self.collection.update_one(condition, update).matched_count)
            if not matched and lease and write is not None and shared is not None and shared.registry:
                # refused: changed by the application meanwhile, unless another process holds it
                matched = self._holder_over_change(record, write.fire_time, lease, shared)
        except DocumentTooLarge as exc:
            self._end_write(record.id, write, written=False)
            raise _too_large(record, exc) from exc
        except BaseException:
            self._end_write(record.id, write, written=False)
            raise
        self._end_write(record.id, write, written=matched)
        if not matched and write is not None and write.mode is not WriteMode.APPLICATION:
            return self._kept_by_another_holder(record.id)
        return matched

    def _holder_over_change(self, record: WriteRecord, fire_time: float, lease: dict[str, Any],
                            shared: SharedMode) -> bool:  # fmt: skip
        registry = shared.registry
        if registry is None or shared.holder is None:
            return False
        try:
            return self._concurrent().holder_over_change(record, fire_time, lease, me=shared.holder,
                                                         dead=registry.dead)  # fmt: skip
        except (DocumentTooLarge, JobshelfError) as exc:
            self._logger.warning('Job "%s": its change by another process could not be merged with this '
                                 "run's next run time (%s)", record.id, exc)  # fmt: skip
            return False

    def _updater(self, update: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        return lambda condition: bool(self.collection.update_one(condition, update).matched_count)

    def _deleter(self, condition: dict[str, Any]) -> bool:
        return bool(self.collection.delete_one(condition).deleted_count)

    def _finish_over_change(
        self, job_id: Any, fire_time: float, finish: Callable[[dict[str, Any]], bool]
    ) -> bool:
        shared = self._shared
        if shared is None or shared.registry is None or shared.holder is None:
            return False
        return self._concurrent().finished_over_change(job_id, fire_time, finish, me=shared.holder,
                                                       dead=shared.registry.dead)  # fmt: skip

    def _replace_looked_up(
        self, record: WriteRecord, condition: dict[str, Any], update: dict[str, Any], looked: Any
    ) -> bool:
        """The application's write of a job it read with ``lookup_job``: bound to the revision it
        read. If another process ran the job since, the change is merged (see
        :mod:`._concurrent`); if the application moved the schedule itself, it is written as is."""
        try:
            if self.collection.update_one(
                {**condition, REVISION_FIELD: looked.revision}, update
            ).matched_count:
                return True
            merged = self._concurrent().application_over_change(record, looked)
        except DocumentTooLarge as exc:
            raise _too_large(record, exc) from exc
        if merged is not None:
            return merged
        return bool(self.collection.update_one(condition, update).matched_count)

    def _registered_unchanged(self, record: WriteRecord) -> bool:
        """Shared mode, ``add_job(replace_existing=True)`` of a job that exists: True when its
        definition is unchanged (then nothing is written: its stored schedule and lease stand)."""
        stored = self._fetch(record.id)
        if stored is None or stored.quarantined:
            return False
        try:
            difference = definition_difference(
                self._decode_state(stored), self._decode_state(Row(record.id, record.data, record.format))
            )
        except Exception as exc:  # unreadable: replaced, as APScheduler would
            _shared_logger.debug('Job "%s": registered again; the stored one cannot be compared (%s)',
                                 record.id, exc)  # fmt: skip
            return False
        if difference is not None:
            _shared_logger.info('Job "%s" registered again with a changed definition (%s): replaced',
                                record.id, difference)  # fmt: skip
            return False
        _shared_logger.debug('Job "%s" registered again, unchanged: its stored schedule stands', record.id)
        return True

    def _delete(self, job_id: str) -> bool:
        shared = self._shared
        write = None if shared is None else shared.begin_write(job_id, in_loop=self._in_loop(), removal=True)
        if write is not None and shared is not None and shared.claims is not None:
            held = shared.claims.held(job_id, write.token)
            if write.mode is WriteMode.RUN_PENDING:  # finished: deleted once its last run is done
                lease = shared.claims.lease_fields(write.token, write.first, remove=True)
                finishing = {"next_run_time": None, **lease}
                try:
                    written = bool(self.collection.update_one(held, {"$set": finishing}).matched_count)
                    if not written:  # changed by the application meanwhile: finished all the same
                        written = self._finish_over_change(
                            job_id, write.fire_time, self._updater({"$set": finishing})
                        )
                except BaseException:
                    self._end_write(job_id, write, written=False)
                    raise
                self._end_write(job_id, write, written=written)
                return written or self._kept_by_another_holder(job_id)
            if write.mode is WriteMode.RUN_OVER:
                deleted = self._deleter(held) or self._finish_over_change(
                    job_id, write.fire_time, self._deleter
                )
                return deleted or self._kept_by_another_holder(job_id)
        return bool(self.collection.delete_one({"_id": job_id}).deleted_count)

    def _kept_by_another_holder(self, job_id: Any) -> bool:
        """A holder's write matched nothing. True when the job still exists: another process
        holds it now (or the application changed it), its state stands, and this write counts as
        done; False when the job is gone."""
        if self.collection.find_one({"_id": job_id}, ["_id"]) is None:
            return False
        self._logger.warning(
            'Job "%s": this process no longer holds its lease (taken for dead, held past lease=%ss, or '
            "changed by the application meanwhile); the write was skipped and the current holder's stands",
            job_id, self._shared.lease if self._shared else None,
        )  # fmt: skip
        return True

    def _end_write(self, job_id: Any, write: Any, *, written: bool) -> None:
        if self._shared is not None and write is not None and write.mode is WriteMode.RUN_PENDING:
            self._shared.book.end_write(job_id, written)

    def _delete_all(self) -> None:
        self.collection.delete_many({QUARANTINE_FIELD: {"$exists": False}, **self._accepted_filter()})

    def _quarantine(self, row: Row, record: dict[str, Any]) -> bool:
        current = self.collection.find_one(
            {"_id": row.id}, ["job_state", REVISION_FIELD, "next_run_time", QUARANTINE_FIELD]
        )
        if current is None or current.get("job_state") != row.data:
            return False  # changed since it was read: the newer state is read next time
        earlier = current.get(QUARANTINE_FIELD)
        if "next_run_time" in current or not isinstance(earlier, dict):
            record["next_run_time"] = current.get("next_run_time")
        else:
            record["next_run_time"] = earlier.get("next_run_time")
        update = {"$set": {QUARANTINE_FIELD: record}, "$unset": {"next_run_time": ""}}
        return self._update_unchanged(row.id, row.data, current.get(REVISION_FIELD), update)

    def _replace_unchanged(self, row: Row, record: WriteRecord) -> bool:
        document = _document(record)
        del document["_id"]
        return self._update_unchanged(row.id, row.data, row.revision, {"$set": document})

    def _scan(self) -> Iterator[StoredJob]:
        for document in self.collection.find({}, _STORED_PROJECTION, sort=[("_id", ASCENDING)]):
            yield _stored(document)

    def _fetch_stored(self, job_id: Any) -> StoredJob | None:
        document = self.collection.find_one({"_id": job_id}, _STORED_PROJECTION)
        return _stored(document) if document is not None else None

    def _set_index(self, row: Row, timestamp: float | None) -> bool:
        update = {"$set": {"next_run_time": timestamp}}
        return self._update_unchanged(row.id, row.data, row.revision, update, quarantined=False)

    def _unquarantine(self, row: Row, timestamp: float | None) -> bool:
        update = {"$set": {"next_run_time": timestamp}, "$unset": {QUARANTINE_FIELD: "", LEASE_FIELD: ""}}
        return self._update_unchanged(row.id, row.data, row.revision, update)

    def _update_unchanged(
        self,
        job_id: Any,
        data: Any,
        revision: Any,
        update: dict[str, Any],
        *,
        quarantined: bool | None = None,
    ) -> bool:
        """Apply ``update`` only if the document still holds the state just read.

        jobshelf's writes carry a fresh revision, so for them the condition is the revision alone,
        on every server. A document written by the stock store has none: it is matched on its
        bytes where the server can (NX-27017, for one, cannot match binary values; there, and only
        for such documents, it is compared here and updated by id).
        """
        base: dict[str, Any] = {"_id": job_id}
        if quarantined is not None:
            base[QUARANTINE_FIELD] = {"$exists": quarantined}
        if revision is not None:
            result = self.collection.update_one({**base, REVISION_FIELD: revision}, update)
            return bool(result.matched_count)
        untagged = {**base, REVISION_FIELD: {"$exists": False}}
        if self._binary_filters or not isinstance(data, bytes):
            if self.collection.update_one({**untagged, "job_state": data}, update).matched_count:
                return True
            if not isinstance(data, bytes):
                return False
            current = self.collection.find_one(untagged, ["job_state"])
            if current is None or current.get("job_state") != data:
                return False
            self._binary_filters = False
            self._logger.info("%s: the server cannot match binary values in filters", self._where())
        return bool(self.collection.update_one(untagged, update).matched_count)

    def _accepted_filter(self) -> dict[str, Any]:
        formats: list[str | None] = [*sorted(self.accepted_formats)]
        if UNTAGGED_FORMAT in formats:
            formats.append(None)  # untagged stock documents
        return {FORMAT_FIELD: {"$in": formats}}


def _stored(document: dict[str, Any]) -> StoredJob:
    record = document.get(QUARANTINE_FIELD)
    return StoredJob(
        document.get("_id"), document.get(FORMAT_FIELD), document.get("next_run_time"),
        document.get("job_state"), record if isinstance(record, dict) or record is None else {},
    )  # fmt: skip


def _is_client_option(name: str) -> bool:
    """True when pymongo's MongoClient takes the option (its own check, case-insensitive)."""
    if name in _CLIENT_PARAMETERS:
        return True
    try:
        _pymongo_validate(name, None)
    except Exception as exc:
        return "Unknown option" not in str(exc) and "is not a valid option" not in str(exc)
    return True


def _row(document: dict[str, Any]) -> Row:
    return Row(
        document.get("_id"),
        document.get("job_state"),
        document.get(FORMAT_FIELD),
        document.get(REVISION_FIELD),
        QUARANTINE_FIELD in document,
    )


def _document(record: WriteRecord) -> dict[str, Any]:
    return {
        "_id": record.id,
        "next_run_time": record.next_run_time,
        "job_state": record.data if isinstance(record.data, str) else Binary(record.data),
        FORMAT_FIELD: record.format,
        REVISION_FIELD: record.revision,
    }


def _too_large(record: WriteRecord, exc: Exception) -> SerializationError:
    return SerializationError(
        f"job {record.id!r} does not fit in a MongoDB document: its state is {len(record.data)} "
        f"bytes and the server takes documents up to its maxBsonObjectSize ({exc}); nothing was "
        "written. Pass smaller arguments, or lower max_state_bytes to be told at encoding"
    )
