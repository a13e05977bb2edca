"""``MemoryJobStore``: the store core with encoded jobs kept in process, for tests without a database.

Unlike APScheduler's ``MemoryJobStore``, which keeps the ``Job`` objects themselves, this store
keeps what a database would: each job encoded by the configured serializer, in a document shaped
like the MongoDB store's. A unit test that adds a job here finds out at ``add_job`` whether the
serializer can store it, and every read decodes it again, exactly as the MongoDB store would.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from .._core import CORE_OPTIONS, MalformedTag, Row, StoreCore, StoredJob, WriteRecord, check_unknown
from ._history import MemoryHistorySink

__all__ = ["MemoryJobStore", "MemoryStorage"]

_FORMAT, _REVISION, _QUARANTINE = "job_state_format", "job_state_rev", "quarantine"


class MemoryStorage:
    """Documents by id, shared by every :class:`MemoryJobStore` given the same instance (like one
    collection shared by several processes). Thread-safe.

    Documents have the MongoDB store's fields: ``_id``, ``next_run_time``, ``job_state``,
    ``job_state_format``, ``job_state_rev`` and, when quarantined, ``quarantine``.

    ``runs`` holds the stores' execution records (``history=``), by history name.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._documents: dict[Any, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def insert(self, document: dict[str, Any]) -> bool:
        """Store a copy of ``document`` (any fields, as another program might write); ``False`` when
        its ``_id`` is taken."""
        with self.lock:
            if document["_id"] in self._documents:
                return False
            self._documents[document["_id"]] = dict(document)
            return True

    def find(self, job_id: Any) -> dict[str, Any] | None:
        """A copy of the document stored under ``job_id``, or ``None``."""
        with self.lock:
            document = self._documents.get(job_id)
            return dict(document) if document is not None else None

    def documents(self) -> list[dict[str, Any]]:
        """Copies of every document."""
        with self.lock:
            return [dict(document) for document in self._documents.values()]

    def _select(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [document for document in self._documents.values() if keep(document)]


class MemoryJobStore(StoreCore):
    """Keeps encoded jobs in a :class:`MemoryStorage`; takes the same ``serializer=``/``accept=``
    arguments as :class:`jobshelf.MongoDBJobStore` and honours the same contract, quarantine
    included.

    :param storage: the storage to use (share one between stores to share their jobs); default: a
        new, private one
    :param options: the store core's: ``serializer``, ``accept``, ``pickle_protocol``,
        ``allowed_callables``, ``allow_by_value``, ``max_state_bytes``, ``history``,
        ``history_ttl``, ``history_buffer`` (see :class:`jobshelf.MongoDBJobStore`; execution
        records are kept in the storage's ``runs``)
    """

    def __init__(self, *, storage: MemoryStorage | None = None, **options: Any) -> None:
        check_unknown(type(self).__name__, options, CORE_OPTIONS | {"storage"})
        super().__init__(**options)
        self.storage = storage if storage is not None else MemoryStorage()

    def _history_sink(self, name: str | None) -> MemoryHistorySink:
        return MemoryHistorySink(self.storage.lock, self.storage.runs, name or "runs", self.history_ttl)

    def _rows(self, keep: Callable[[dict[str, Any]], bool]) -> list[Row]:
        with self.storage.lock:
            selected = self.storage._select(keep)
            selected.sort(key=lambda d: (_sort_time(d.get("next_run_time")), str(d["_id"])))
            return [_row(document) for document in selected]

    def _fetch(self, job_id: str) -> Row | None:
        document = self.storage.find(job_id)
        return _row(document) if document is not None else None

    def _fetch_due(self, timestamp: float) -> Iterable[Row]:
        return self._rows(lambda d: _is_time(d.get("next_run_time")) and d["next_run_time"] <= timestamp)

    def _fetch_all(self) -> Iterable[Row]:
        return self._rows(lambda d: True)

    def _earliest(self, exclude: Collection[Any]) -> tuple[Any, Any] | None:
        found = self.storage._select(
            lambda d: (
                _is_time(d.get("next_run_time"))
                and _QUARANTINE not in d
                and d["_id"] not in exclude
                and self.accepts(d.get(_FORMAT))
            )
        )
        if not found:
            return None
        first = min(found, key=lambda d: (d["next_run_time"], str(d["_id"])))
        return first["next_run_time"], first["_id"]

    def _insert(self, record: WriteRecord) -> bool:
        return self.storage.insert(_document(record))

    def _replace(self, record: WriteRecord) -> bool:
        with self.storage.lock:
            document = self.storage._documents.get(record.id)
            if document is None:
                return False
            document.pop(_QUARANTINE, None)
            document.update(_document(record))
            return True

    def _delete(self, job_id: str) -> bool:
        with self.storage.lock:
            return self.storage._documents.pop(job_id, None) is not None

    def _delete_all(self) -> None:
        with self.storage.lock:
            for document in self.storage._select(
                lambda d: _QUARANTINE not in d and self.accepts(d.get(_FORMAT))
            ):
                del self.storage._documents[document["_id"]]

    def _format_counts(self, *, quarantined: bool) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for document in self.storage._select(
            lambda d: (quarantined or _QUARANTINE not in d) and "job_state" in d
        ):
            fmt = document.get(_FORMAT)
            key = MalformedTag.of(fmt)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _count_quarantined(self) -> int:
        return len(self.storage._select(lambda d: _QUARANTINE in d))

    def _quarantine(self, row: Row, record: dict[str, Any]) -> bool:
        with self.storage.lock:
            document = self.storage._documents.get(row.id)
            if document is None or document.get("job_state") is not row.data:
                return False  # changed since it was read (every write stores new bytes)
            earlier = document.get(_QUARANTINE)
            if "next_run_time" in document or not isinstance(earlier, dict):
                record["next_run_time"] = document.pop("next_run_time", None)
            else:
                record["next_run_time"] = earlier.get("next_run_time")
            document[_QUARANTINE] = record
            return True

    def _fetch_quarantined(self, job_id: str | None) -> list[tuple[Row, dict[str, Any]]]:
        def wanted(document: dict[str, Any]) -> bool:
            return _QUARANTINE in document and (job_id is None or document["_id"] == job_id)

        with self.storage.lock:
            found = [
                (_row(d), dict(d[_QUARANTINE]) if isinstance(d[_QUARANTINE], dict) else {})
                for d in self.storage._select(wanted)
            ]
        found.sort(key=lambda item: (str(item[1].get("at")), str(item[0].id)))
        return found

    def _replace_unchanged(self, row: Row, record: WriteRecord) -> bool:
        with self.storage.lock:
            document = self.storage._documents.get(row.id)
            if document is None or document.get("job_state") is not row.data:
                return False
            document.update(_document(record))
            return True

    def _scan(self) -> Iterator[StoredJob]:
        for document in sorted(self.storage.documents(), key=lambda d: str(d["_id"])):
            yield _stored(document)

    def _fetch_stored(self, job_id: Any) -> StoredJob | None:
        document = self.storage.find(job_id)
        return _stored(document) if document is not None else None

    def _set_index(self, row: Row, timestamp: float | None) -> bool:
        with self.storage.lock:
            document = self.storage._documents.get(row.id)
            if document is None or _QUARANTINE in document or document.get("job_state") is not row.data:
                return False
            document["next_run_time"] = timestamp
            return True

    def _unquarantine(self, row: Row, timestamp: float | None) -> bool:
        with self.storage.lock:
            document = self.storage._documents.get(row.id)
            if document is None or _QUARANTINE not in document or document.get("job_state") is not row.data:
                return False
            del document[_QUARANTINE]
            document["next_run_time"] = timestamp
            return True


def _is_time(value: Any) -> bool:
    return type(value) in (float, int)


def _sort_time(value: Any) -> float:
    return float(value) if _is_time(value) else -math.inf


def _row(document: dict[str, Any]) -> Row:
    return Row(
        document.get("_id"), document.get("job_state"), document.get(_FORMAT), document.get(_REVISION),
        _QUARANTINE in document,
    )  # fmt: skip


def _document(record: WriteRecord) -> dict[str, Any]:
    return {
        "_id": record.id, "next_run_time": record.next_run_time, "job_state": record.data,
        _FORMAT: record.format, _REVISION: record.revision,
    }  # fmt: skip


def _stored(document: dict[str, Any]) -> StoredJob:
    record = document.get(_QUARANTINE)
    return StoredJob(
        document["_id"], document.get(_FORMAT), document.get("next_run_time"), document.get("job_state"),
        record if isinstance(record, dict) or record is None else {},
    )  # fmt: skip
