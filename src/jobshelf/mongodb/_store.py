"""``MongoDBJobStore``: a drop-in replacement for APScheduler 3's ``MongoDBJobStore``.

It speaks MongoDB only: documents, indexes, queries and pymongo's errors. Everything else (formats,
decoding, quarantine decisions, the allow-list, outages) is the store core's
(:class:`jobshelf._store.StoreCore`).
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Collection, Iterable, Iterator
from typing import Any

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
from .._exceptions import SerializationError
from .._serializer import SerializerSpec
from ._history import MongoHistorySink
from ._leases import DONE_EVENTS, LEASE_FIELD, Leases, Watcher

try:
    from bson.binary import Binary
    from pymongo import ASCENDING, MongoClient
    from pymongo.common import validate as _pymongo_validate
    from pymongo.errors import ConnectionFailure, DocumentTooLarge, DuplicateKeyError
except ImportError as exc:  # pragma: no cover - pymongo is a dependency
    raise ImportError("jobshelf.MongoDBJobStore requires pymongo: pip install pymongo") from exc

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD", "MongoDBJobStore"]

#: Document field naming the format that wrote ``job_state`` (absent: stock pickle).
FORMAT_FIELD = "job_state_format"
#: Document field set on every jobshelf write: a random token that conditional updates compare.
REVISION_FIELD = "job_state_rev"
#: Document field set on a job that could not be decoded: why, when, and its next run time.
QUARANTINE_FIELD = "quarantine"

_SORT = [("next_run_time", ASCENDING), ("_id", ASCENDING)]
#: Every option of MongoDBJobStore itself (anything else goes to MongoClient).
_OPTIONS = CORE_OPTIONS | {"database", "collection", "client", "shared", "lease", "recheck"}
#: MongoClient's own parameters (its other options are checked with pymongo's validator).
_CLIENT_PARAMETERS = frozenset({"host", "port", "document_class", "tz_aware", "connect", "type_registry"})
_STORED_PROJECTION = ["next_run_time", "job_state", FORMAT_FIELD, QUARANTINE_FIELD]
# What reads need (each projected field costs on some servers). The revision is read again, with
# the state, when a job has to be quarantined.
_READ_PROJECTION = ["job_state", FORMAT_FIELD, QUARANTINE_FIELD]
_QUARANTINE_PROJECTION = ["job_state", FORMAT_FIELD, REVISION_FIELD, QUARANTINE_FIELD]
# Shared mode: a finished job waiting for its last run to be reported, then deleted.
_NOT_FINISHING = {f"{LEASE_FIELD}.remove": {"$ne": True}}
# Every numeric next_run_time (a range only matches numbers: malformed values never come back).
_SCHEDULED = {"next_run_time": {"$lte": float("inf")}}
# The stock store's query for the earliest job: faster than the range on some servers.
_STOCK_SCHEDULED = {"next_run_time": {"$ne": None}}


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
    :param lease: seconds a claim lasts without renewal (shared mode; renewed while a job runs)
    :param recheck: seconds between checks for jobs added by other processes, where the server has
        no change streams (shared mode)
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
        lease: float = 30,
        recheck: float = 1.0,
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
        if shared:
            lease = as_number("lease", lease)
            recheck = as_number("recheck", recheck)
        elif (lease, recheck) != (30, 1.0):
            raise ValueError(
                f"lease={lease!r} and recheck={recheck!r} apply to shared mode only; pass shared=True "
                "(several schedulers share this collection) or leave them out"
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
        self._recheck = float(recheck)
        self._watcher: Watcher | None = None
        self._planned = math.inf  # the wake-up time last given to the scheduler (shared mode)
        self._owns_client = not client
        if client:
            self.client = maybe_ref(client)
        else:
            connect_args.setdefault("w", 1)
            self.client = MongoClient(**connect_args)
        self.collection = self.client[database][collection]
        self._leases = Leases(self.collection, float(lease)) if self.shared else None

    def start(self, scheduler: Any, alias: str) -> None:
        """Create the index, check the formats and, in shared mode, start watching for changes."""
        super().start(scheduler, alias)
        if self._leases is not None:
            # the claim reads back what it claimed by token
            self.collection.create_index(f"{LEASE_FIELD}.token", sparse=True)
            scheduler.add_listener(self._leases.on_event, DONE_EVENTS)
            self._watcher = Watcher(self._leases, scheduler.wakeup, lambda: self._planned, self._recheck,
                                    self.collection.full_name)  # fmt: skip
            self._watcher.start()
            self._logger.info("%s: shared mode, holder %s, lease %ss", self._where(),
                              self._leases.holder, self._leases.lease)  # fmt: skip

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
        return self._watcher.mode if self._watcher is not None else None

    def shutdown(self) -> None:
        """Stop watching and write the last releases (shared mode); close the MongoClient if this
        store created it. The scheduler's last loop pass after this is answered quietly."""
        super().shutdown()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.join(5)
        if self._leases is not None:
            self._leases.flush()
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

    def _fetch(self, job_id: str) -> Row | None:
        conditions: dict[str, Any] = {"_id": job_id}
        if self.shared:
            conditions.update(_NOT_FINISHING)
        document = self.collection.find_one(conditions, _QUARANTINE_PROJECTION)
        return _row(document) if document is not None else None

    def _fetch_due(self, timestamp: float) -> Iterable[Row]:
        if self._leases is not None:
            return self._claim_due(self._leases, timestamp)
        documents = self.collection.find({"next_run_time": {"$lte": timestamp}}, _READ_PROJECTION, sort=_SORT)
        return map(_row, documents)

    def _claim_due(self, leases: Leases, timestamp: float) -> list[Row]:
        abandoned, due = leases.claim(self._claimable(), timestamp)
        rows = []
        fields = [*_READ_PROJECTION, "next_run_time", LEASE_FIELD]
        claimed = {f"{LEASE_FIELD}.token": {"$in": [abandoned, due]}}
        for document in self.collection.find(claimed, fields, sort=_SORT):
            lease = document.get(LEASE_FIELD) or {}
            pending = lease.get("pending") if lease.get("token") == abandoned else None
            due_at = float(pending) if isinstance(pending, (int, float)) else None
            fire_time = due_at if due_at is not None else document.get("next_run_time")
            if isinstance(fire_time, (int, float)):
                leases.remember(document["_id"], float(fire_time), lease["token"])
            rows.append(_row(document)._replace(due_at=due_at))
        return rows

    def _claimable(self) -> dict[str, Any]:
        return {QUARANTINE_FIELD: {"$exists": False}, **self._accepted_filter()}

    def _fetch_all(self) -> Iterable[Row]:
        conditions = _NOT_FINISHING if self.shared else {}
        return map(_row, self.collection.find(conditions, _READ_PROJECTION, sort=_SORT))

    def _next_timestamp(self) -> float | None:
        if self._leases is not None:
            times = [
                t for t in map(as_timestamp, self._leases.next_times(self._claimable())) if t is not None
            ]
            self._planned = min(times, default=math.inf)
            return min(times, default=None)
        return super()._next_timestamp()

    def _earliest(self, exclude: Collection[Any]) -> tuple[Any, Any] | None:
        projection = ["next_run_time", FORMAT_FIELD]
        sort = [("next_run_time", ASCENDING)]
        conditions: dict[str, Any] = dict(_SCHEDULED)
        if exclude:
            conditions["_id"] = {"$nin": list(exclude)}
        document = self.collection.find_one(conditions, projection, sort=sort)
        if document is not None and not self.accepts(document.get(FORMAT_FIELD)):
            # The earliest job is another store's: ask again for ours only.
            document = self.collection.find_one(
                {**conditions, **self._accepted_filter()}, projection, sort=sort
            )
        return (document.get("next_run_time"), document.get("_id")) if document is not None else None

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
        return int(self.collection.count_documents({QUARANTINE_FIELD: {"$exists": True}}))

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
            return False
        except DocumentTooLarge as exc:
            raise _too_large(record, exc) from exc
        return True

    def _replace(self, record: WriteRecord) -> bool:
        document = _document(record)
        del document["_id"]
        condition: dict[str, Any] = {"_id": record.id}
        update: dict[str, Any] = {"$set": document, "$unset": {QUARANTINE_FIELD: ""}}
        leases, (mode, token) = self._leases, self._write_mode(record.id)
        if leases is not None:
            if mode in {"app", "done"}:  # an application's change, or a run already over: release
                update["$unset"][LEASE_FIELD] = ""
            if mode in {"done", "keep"}:  # the holder, after submitting: only while it holds the lease
                condition = leases.held(record.id, token)
            if mode == "keep":
                document.update(leases.keep_fields(record.id))
        try:
            matched = bool(self.collection.update_one(condition, update).matched_count)
        except DocumentTooLarge as exc:
            self._finish_write(record.id, mode, written=False)
            raise _too_large(record, exc) from exc
        except BaseException:
            self._finish_write(record.id, mode, written=False)
            raise
        self._finish_write(record.id, mode, written=matched)
        if not matched and mode in {"done", "keep"}:
            return self._lease_lost(record.id)
        return matched

    def _delete(self, job_id: str) -> bool:
        leases, (mode, token) = self._leases, self._write_mode(job_id)
        if leases is not None and mode == "keep":  # finished: deleted once its last run is done
            finishing = {"next_run_time": None, f"{LEASE_FIELD}.remove": True, **leases.keep_fields(job_id)}
            try:
                written = bool(
                    self.collection.update_one(leases.held(job_id, token), {"$set": finishing}).matched_count
                )
            except BaseException:
                self._finish_write(job_id, mode, written=False)
                raise
            self._finish_write(job_id, mode, written=written)
            return written or self._lease_lost(job_id)
        return bool(self.collection.delete_one({"_id": job_id}).deleted_count)

    def _lease_lost(self, job_id: Any) -> bool:
        """A holder's write matched nothing: the job is gone (``False``), or another process holds
        it now (``True``: nothing to report to APScheduler, the other holder's state stands)."""
        if self.collection.find_one({"_id": job_id}, ["_id"]) is None:
            return False
        self._logger.warning(
            'Job "%s": this process no longer holds its lease (held past lease=%ss, or changed by the '
            "application meanwhile); the write was skipped and the current holder's stands",
            job_id, self._leases.lease if self._leases else None,
        )  # fmt: skip
        return True

    def _write_mode(self, job_id: Any) -> tuple[str, int]:
        """``"plain"`` (not shared), or the lease protocol's ``"app"``, ``"done"`` or ``"keep"``,
        with the claim's token."""
        if self._leases is None:
            return "plain", 0
        if not self._in_loop():
            self._leases.forget(job_id)
            return "app", 0
        return self._leases.begin_write(job_id)

    def _finish_write(self, job_id: Any, mode: str, *, written: bool) -> None:
        if self._leases is not None and mode == "keep":
            finished = self._leases.end_write(job_id, written)
            if finished is not None:
                self._leases.release(job_id, *finished)  # the run ended while the write was under way

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
        update = {"$set": {"next_run_time": timestamp}, "$unset": {QUARANTINE_FIELD: ""}}
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
