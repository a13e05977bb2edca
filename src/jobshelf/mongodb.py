"""The MongoDB adapter: a drop-in replacement for APScheduler 3's ``MongoDBJobStore``."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.util import datetime_to_utc_timestamp, maybe_ref, utc_timestamp_to_datetime

from ._exceptions import DeserializationError
from ._serializer import SerializerSpec, resolve_serializer
from ._store import UNTAGGED_FORMAT, JobCodec, quarantine_record, unaccepted_formats_error

try:
    from bson.binary import Binary
    from pymongo import ASCENDING, MongoClient
    from pymongo.errors import DuplicateKeyError
except ImportError as exc:  # pragma: no cover - pymongo is a dependency
    raise ImportError("jobshelf.MongoDBJobStore requires pymongo: pip install pymongo") from exc

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "MongoDBJobStore"]

#: Document field naming the format that wrote ``job_state`` (absent: stock pickle).
FORMAT_FIELD = "job_state_format"
#: Document field set on a job that could not be decoded: why, when, and its next run time.
QUARANTINE_FIELD = "quarantine"

_SORT = [("next_run_time", ASCENDING), ("_id", ASCENDING)]
# What reads need (each projected field costs on some servers): next_run_time is re-read only
# when a job has to be quarantined.
_READ_PROJECTION = ["job_state", FORMAT_FIELD, QUARANTINE_FIELD]


class MongoDBJobStore(BaseJobStore):  # type: ignore[misc]
    """Stores jobs in a MongoDB collection, encoded by a pluggable serializer.

    A drop-in replacement for :class:`apscheduler.jobstores.mongodb.MongoDBJobStore`: the same
    constructor, the same documents (``_id``, ``next_run_time`` as a float UTC timestamp or
    ``None``, ``job_state`` as Binary — or a string for a text serializer such as JSON) plus a
    ``job_state_format`` field, and the same contract.
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
    :param pickle_protocol: pickle protocol of the default pickle serializer
    :param serializer: how job state is encoded: ``None`` (pickle), a name (``"pickle"``,
        ``"cloudpickle"``, ``"msgpack"``, or one registered under the ``jobshelf.serializers``
        entry point group), a ``"module:attr"`` string, a class, or an object with
        ``dumps``/``loads``
    :param accept: the formats this store decodes; default: the serializer's own format (and
        untagged stock documents for pickle and cloudpickle). Jobs read in another accepted format
        are rewritten in the configured one when they are next updated.
    """

    def __init__(
        self,
        database: str = "apscheduler",
        collection: str = "jobs",
        client: Any = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        *,
        serializer: SerializerSpec = None,
        accept: Iterable[SerializerSpec] | None = None,
        **connect_args: Any,
    ) -> None:
        super().__init__()
        self.pickle_protocol = pickle_protocol

        if not database:
            raise ValueError('The "database" parameter must not be empty')
        if not collection:
            raise ValueError('The "collection" parameter must not be empty')

        self.serializer = resolve_serializer(serializer, pickle_protocol=pickle_protocol)
        self._codec = JobCodec(self.serializer, accept)
        self._format_filter = _format_filter(self._codec.accepted_formats)

        self._owns_client = not client
        if client:
            self.client = maybe_ref(client)
        else:
            connect_args.setdefault("w", 1)
            self.client = MongoClient(**connect_args)

        self.collection = self.client[database][collection]

    @property
    def format(self) -> str:
        """The format name new and updated jobs are written in."""
        return self._codec.format

    @property
    def accepted_formats(self) -> frozenset[str]:
        """The format names this store decodes."""
        return self._codec.accepted_formats

    def start(self, scheduler: Any, alias: str) -> None:
        """Create the ``next_run_time`` index and refuse to start on jobs it cannot accept.

        :raises UnacceptedFormatError: the collection holds jobs in formats outside ``accept``
        """
        super().start(scheduler, alias)
        self.collection.create_index("next_run_time", sparse=True)
        counts = self.format_counts()
        unaccepted = {fmt: n for fmt, n in counts.items() if not self._codec.accepts(fmt)}
        if unaccepted:
            raise unaccepted_formats_error(
                f"collection {self.collection.full_name!r}", unaccepted, self._codec
            )

    def format_counts(self) -> dict[str, int]:
        """Count the scheduled (not quarantined) jobs per format, untagged ones as pickle."""
        pipeline = [
            {"$match": {QUARANTINE_FIELD: {"$exists": False}}},
            {"$group": {"_id": f"${FORMAT_FIELD}", "count": {"$sum": 1}}},
        ]
        counts: dict[str, int] = {}
        for row in self.collection.aggregate(pipeline):
            fmt = row["_id"] or UNTAGGED_FORMAT
            counts[fmt] = counts.get(fmt, 0) + int(row["count"])
        return counts

    @property
    def connection(self) -> Any:
        warnings.warn(
            'The "connection" member is deprecated -- use "client" instead',
            DeprecationWarning,
            stacklevel=2,
        )
        return self.client

    def lookup_job(self, job_id: str) -> Job | None:
        """Return the job, or ``None`` when there is none (or it is quarantined or unaccepted)."""
        document = self.collection.find_one(job_id, _READ_PROJECTION)
        if document is None:
            return None
        jobs = self._reconstitute([document])
        return jobs[0] if jobs else None

    def get_due_jobs(self, now: Any) -> list[Job]:
        """Jobs due at ``now``, by next run time then id."""
        timestamp = datetime_to_utc_timestamp(now)
        return self._get_jobs({"next_run_time": {"$lte": timestamp}})

    def get_next_run_time(self) -> Any:
        """The earliest next run time of the scheduled jobs, or ``None``."""
        projection = ["next_run_time", FORMAT_FIELD]
        sort = [("next_run_time", ASCENDING)]
        # The stock store's query first; a filtered one only when the earliest job is not ours.
        document = self.collection.find_one({"next_run_time": {"$ne": None}}, projection, sort=sort)
        if document is not None and not (
            document.get("next_run_time") is not None and self._codec.accepts(document.get(FORMAT_FIELD))
        ):
            conditions = {"next_run_time": {"$exists": True, "$ne": None}, **self._format_filter}
            document = self.collection.find_one(conditions, projection, sort=sort)
        return utc_timestamp_to_datetime(document["next_run_time"]) if document else None

    def get_all_jobs(self) -> list[Job]:
        """Every scheduled job by next run time then id, paused jobs last."""
        jobs = self._get_jobs({})
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job: Job) -> None:
        """Insert the job. :raises ConflictingIdError: a job with that id exists."""
        document = {
            "_id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": self._encode(job),
            FORMAT_FIELD: self._codec.format,
        }
        try:
            self.collection.insert_one(document)
        except DuplicateKeyError:
            raise ConflictingIdError(job.id) from None

    def update_job(self, job: Job) -> None:
        """Rewrite the job in the configured format. :raises JobLookupError: no such job."""
        changes = {
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": self._encode(job),
            FORMAT_FIELD: self._codec.format,
        }
        result = self.collection.update_one(
            {"_id": job.id}, {"$set": changes, "$unset": {QUARANTINE_FIELD: ""}}
        )
        if result and result.matched_count == 0:
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        """Delete the job (quarantined or not). :raises JobLookupError: no such job."""
        result = self.collection.delete_one({"_id": job_id})
        if result and result.deleted_count == 0:
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        """Delete every scheduled job; quarantined jobs and unaccepted formats are kept."""
        self.collection.delete_many({QUARANTINE_FIELD: {"$exists": False}, **self._format_filter})

    def shutdown(self) -> None:
        """Close the MongoClient if this store created it."""
        if self._owns_client:
            self.client.close()

    def _encode(self, job: Job) -> Any:
        data = self._codec.encode(job)
        return data.decode("utf-8") if self._codec.text else Binary(data)

    def _get_jobs(self, conditions: dict[str, Any]) -> list[Job]:
        return self._reconstitute(self.collection.find(conditions, _READ_PROJECTION, sort=_SORT))

    def _reconstitute(self, documents: Iterable[dict[str, Any]]) -> list[Job]:
        jobs = []
        accepts = self._codec.accepts
        for document in documents:
            # Quarantined jobs are out of the schedule; unaccepted formats belong to other stores.
            if QUARANTINE_FIELD in document or not accepts(document.get(FORMAT_FIELD)):
                continue
            data = document["job_state"]
            try:
                jobs.append(
                    self._codec.decode(
                        document["_id"],
                        document.get(FORMAT_FIELD),
                        data.encode("utf-8") if isinstance(data, str) else data,
                        self._scheduler,
                        self._alias,
                    )
                )
            except Exception as exc:
                self._quarantine(document, exc)
        return jobs

    def _quarantine(self, document: dict[str, Any], exc: Exception) -> None:
        job_id = document["_id"]
        fmt = document.get(FORMAT_FIELD)
        stored = self.collection.find_one({"_id": job_id}, ["next_run_time"])
        next_run_time = stored.get("next_run_time") if stored is not None else None
        record = quarantine_record(fmt, exc, next_run_time=next_run_time)
        update = {"$set": {QUARANTINE_FIELD: record}, "$unset": {"next_run_time": ""}}
        # Only the exact bytes that failed are quarantined: a concurrent update wins.
        result = self.collection.update_one({"_id": job_id, "job_state": document["job_state"]}, update)
        if result.matched_count == 0:
            # Some wire-protocol servers (NX-27017) cannot match binary values in update filters:
            # compare here, then update by id.
            current = self.collection.find_one({"_id": job_id}, ["job_state"])
            if current is not None and current["job_state"] == document["job_state"]:
                result = self.collection.update_one({"_id": job_id}, update)
        self._logger.warning(
            'Unable to restore job "%s" (%s) -- quarantined it, not removed: %s',
            job_id,
            fmt or UNTAGGED_FORMAT,
            exc,
            exc_info=not isinstance(exc, DeserializationError),
        )
        if result.matched_count == 0:
            self._logger.info('Job "%s" changed while being quarantined; left as is', job_id)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} (client={self.client}, format={self.format!r})>"


def _format_filter(accepted: frozenset[str]) -> dict[str, Any]:
    formats: list[str | None] = [*sorted(accepted)]
    if UNTAGGED_FORMAT in accepted:
        formats.append(None)  # untagged stock documents
    return {FORMAT_FIELD: {"$in": formats}}
