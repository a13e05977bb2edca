"""The MongoDB store's execution history: a sibling collection (default ``<collection>_runs``).

Indexes, created when the store starts:

- unique on ``(job_id, scheduled_run_time, copy)``: the first record of a fire time has ``copy``
  0; a second one for the same job and fire time (a fire time that ran twice) is inserted with
  the next copy number and ``duplicate: true``: kept and visible, never refused;
- a TTL index on ``finished_at`` (``history_ttl`` seconds);
- ``scheduled_run_time``, for the newest-first listing.

Records are read back as raw BSON and decoded one by one, out-of-range dates as plain numbers and
invalid UTF-8 replaced, so that no stored value can make a read fail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bson import decode as bson_decode
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure

from .._core.history import HistoryQuery, HistorySink
from ._fields import is_integer

__all__ = ["MongoHistorySink"]

_FIRE_TIME_KEY = [("job_id", ASCENDING), ("scheduled_run_time", ASCENDING), ("copy", ASCENDING)]
_TTL_KEY = [("finished_at", ASCENDING)]
_RAW = CodecOptions(document_class=RawBSONDocument)
_DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="replace",
)
#: Only records whose fire time is a number are listed (a range matches numbers only).
_TIMED = {"$lte": float("inf")}
_SORT = [("scheduled_run_time", DESCENDING), ("job_id", ASCENDING), ("copy", ASCENDING)]
#: The most copies of one fire time recorded (a loop of duplicates cannot grow without end).
MAX_COPIES = 100
_DUPLICATE_KEY = 11000

logger = logging.getLogger("jobshelf.history")


class MongoHistorySink(HistorySink):
    """Records in ``collection``, kept ``ttl`` seconds."""

    transient_errors = (ConnectionFailure,)

    def __init__(self, collection: Any, ttl: float) -> None:
        self.collection = collection
        self.name = str(collection.name)
        self.ttl = ttl
        self._raw = collection.with_options(codec_options=_RAW)

    def exists(self) -> bool:
        return self.name in self.collection.database.list_collection_names()

    def prepare(self) -> None:
        self.collection.create_index(_FIRE_TIME_KEY, unique=True, name="job_fire_time")
        self.collection.create_index([("scheduled_run_time", DESCENDING)], name="fire_time")
        seconds = max(round(self.ttl), 1)
        try:
            self.collection.create_index(_TTL_KEY, expireAfterSeconds=seconds, name="ttl")
        except OperationFailure:
            # an index made with another history_ttl: change its expiry in place
            self.collection.database.command(
                "collMod", self.name, index={"keyPattern": dict(_TTL_KEY), "expireAfterSeconds": seconds}
            )

    def write(self, documents: Sequence[dict[str, Any]]) -> None:
        first = [{**document, "copy": 0, "duplicate": False} for document in documents]
        try:
            self.collection.insert_many(first, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            refused = [error for error in errors if error.get("code") != _DUPLICATE_KEY]
            for error in errors:
                if error.get("code") == _DUPLICATE_KEY:
                    self._insert_copy(first[error["index"]])
            if refused:
                raise OperationFailure(
                    f"{len(refused)} of {len(first)} records refused: {refused[0].get('errmsg')}"
                ) from exc

    def _insert_copy(self, document: dict[str, Any]) -> None:
        """A record whose key is taken: written already (a retried batch), or a second run of the
        same fire time, stored with the next copy number."""
        if self.collection.find_one({"_id": document["_id"]}, ["_id"]) is not None:
            return
        for copy in range(1, MAX_COPIES):
            try:
                self.collection.insert_one({**document, "copy": copy, "duplicate": True})
                return
            except DuplicateKeyError:
                if self.collection.find_one({"_id": document["_id"]}, ["_id"]) is not None:
                    return
        logger.error("job %r: fire time %r has %d records already; this one is not stored",
                     document["job_id"], document["scheduled_run_time"], MAX_COPIES)  # fmt: skip

    def _filter(self, query: HistoryQuery) -> dict[str, Any]:
        conditions: dict[str, Any] = {
            "scheduled_run_time": {"$gte": query.since} if query.since is not None else _TIMED
        }
        if query.job_id is not None:
            conditions["job_id"] = query.job_id
        if query.outcomes is not None:
            conditions["outcome"] = {"$in": list(query.outcomes)}
        return conditions

    def read(self, query: HistoryQuery) -> list[Any]:
        conditions = self._filter(query)
        if query.duplicates:
            keys = []
            for raw in self._raw.find({**conditions, "duplicate": True}, ["job_id", "scheduled_run_time"],
                                      sort=_SORT, limit=query.limit):  # fmt: skip
                document = _decoded(raw)
                job_id, when = document.get("job_id"), document.get("scheduled_run_time")
                if type(job_id) is str and type(when) in (float, int):
                    keys.append({"job_id": job_id, "scheduled_run_time": when})
            if not keys:
                return []
            conditions = {**conditions, "$or": keys}
        return [_decoded(raw) for raw in self._raw.find(conditions, sort=_SORT, limit=query.limit)]

    def summary(self, since: float) -> tuple[dict[Any, int], dict[Any, int], int]:
        match = {"$match": {"scheduled_run_time": {"$gte": since}}}
        counts = []
        for field in ("$outcome", "$holder.instance"):
            pipeline = [match, {"$group": {"_id": field, "count": {"$sum": 1}}}]
            found: dict[Any, int] = {}
            for raw in self._raw.aggregate(pipeline):
                row = _decoded(raw)
                key = row.get("_id")
                key = key if key is None or type(key) is str else repr(key)
                found[key] = found.get(key, 0) + _count(row.get("count"))
            counts.append(found)
        duplicates = self.collection.count_documents(
            {"scheduled_run_time": {"$gte": since}, "duplicate": True}
        )
        return counts[0], counts[1], int(duplicates)


def _count(value: Any) -> int:
    return int(value) if is_integer(value) else 0


def _decoded(raw: Any) -> dict[str, Any]:
    """One stored record as plain values; one that cannot be decoded at all reads as empty."""
    try:
        document = bson_decode(raw.raw, _DECODE)
    except Exception as exc:
        logger.warning("an execution record could not be decoded (%s); shown as empty", exc)
        return {}
    return document if isinstance(document, dict) else {}
