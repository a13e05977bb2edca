"""The memory store's execution history: records kept in its :class:`~jobshelf.MemoryStorage`."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._core.history import HistoryQuery, HistorySink

__all__ = ["MemoryHistorySink"]


def _number(value: Any) -> bool:
    return type(value) in (float, int) and not (type(value) is float and math.isnan(value))


def _expired(record: Any, cutoff: dt.datetime) -> bool:
    """A record whose ``finished_at`` is an aware date before ``cutoff`` (anything else stays)."""
    if type(record) is not dict:
        return False
    finished = record.get("finished_at")
    try:
        return type(finished) is dt.datetime and finished.tzinfo is not None and finished < cutoff
    except Exception:  # a tzinfo of another program's making
        return False


def _key(document: dict[str, Any]) -> tuple[str, float] | None:
    """(job id, fire time) when both are plain values, else ``None``."""
    job_id: Any = document.get("job_id")
    when: Any = document.get("scheduled_run_time")
    if type(job_id) is str and _number(when):
        return job_id, float(when)
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same plain type (a stored value may be anything: no ``__eq__`` of its own
    is called)."""
    return type(a) is type(b) and type(a) in (str, float, int) and a == b


class MemoryHistorySink(HistorySink):
    """Records as dicts in ``runs[name]`` (a ``MemoryStorage``'s ``runs``), under its lock.

    Records older than ``ttl`` seconds (by ``finished_at``) are removed when records are written,
    as MongoDB's TTL index does.
    """

    def __init__(
        self, lock: threading.RLock, runs: dict[str, list[dict[str, Any]]], name: str, ttl: float
    ) -> None:
        self.name = name
        self._lock = lock
        self._runs = runs
        self._ttl = ttl

    def _records(self) -> list[dict[str, Any]]:
        return self._runs.setdefault(self.name, [])

    def exists(self) -> bool:
        with self._lock:
            return self.name in self._runs

    def write(self, documents: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            records = self._records()
            cutoff = dt.datetime.fromtimestamp(time.time() - self._ttl, dt.timezone.utc)
            records[:] = [r for r in records if not _expired(r, cutoff)]
            ids = {r.get("_id") for r in records if type(r) is dict and type(r.get("_id")) is str}
            for document in documents:
                if document["_id"] in ids:
                    continue  # written already
                key = _key(document)
                earlier = [r.get("copy") for r in records if type(r) is dict and _key(r) == key]
                copy = max((c for c in earlier if type(c) is int), default=0) + 1 if earlier else 0
                stored = {**document, "holder": dict(document["holder"]), "copy": copy, "duplicate": copy > 0}
                records.append(stored)
                ids.add(document["_id"])

    def _selected(self, query: HistoryQuery) -> list[dict[str, Any]]:
        def wanted(record: dict[str, Any]) -> bool:
            when: Any = record.get("scheduled_run_time")
            if not _number(when):
                return False
            if query.since is not None and when < query.since:
                return False
            if query.job_id is not None and not _same(record.get("job_id"), query.job_id):
                return False
            outcome = record.get("outcome")
            return query.outcomes is None or (type(outcome) is str and outcome in query.outcomes)

        return [record for record in self._records() if type(record) is dict and wanted(record)]

    def read(self, query: HistoryQuery) -> list[Any]:
        with self._lock:
            selected = self._selected(query)
            if query.duplicates:
                twice = {_key(r) for r in selected if r.get("duplicate") is True} - {None}
                selected = [r for r in selected if _key(r) in twice]
            selected.sort(key=_order)
            return [dict(record) for record in selected[: query.limit]]

    def summary(self, since: float) -> tuple[dict[Any, int], dict[Any, int], int]:
        outcomes: dict[Any, int] = {}
        holders: dict[Any, int] = {}
        duplicates = 0
        with self._lock:
            for record in self._selected(HistoryQuery(None, since, None, False, 1)):
                outcome = record.get("outcome")
                outcome = outcome if type(outcome) is str else None
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                holder = record.get("holder")
                instance = holder.get("instance") if type(holder) is dict else None
                instance = instance if type(instance) is str else None
                holders[instance] = holders.get(instance, 0) + 1
                duplicates += record.get("duplicate") is True
        return outcomes, holders, duplicates


def _order(record: dict[str, Any]) -> tuple[float, str, int]:
    job_id, copy = record.get("job_id"), record.get("copy")
    return (
        -float(record["scheduled_run_time"]),
        job_id if type(job_id) is str else "",
        copy if type(copy) is int else 0,
    )
