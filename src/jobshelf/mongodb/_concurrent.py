"""Two writers of one job in shared mode: the process running it, and an application changing it.

APScheduler serialises them in one process with its lock; across processes they meet only in the
document. Left alone, either one undoes the other's schedule, and a fire time runs twice:

- *the holder's write-back loses*: an application changes the job (``modify_job``,
  ``pause_job``...) between the holder's claim and its write-back. The change releases the lease,
  the holder's write (bound to its lease) is refused, and the document still says the fire time
  the holder just ran;
- *the application's write loses*: ``modify_job`` reads the job, the holder advances it, then the
  application writes back what it read, next run time included.

The rule for both: **the schedule belongs to whoever moved it, the definition to the
application**. A holder whose write-back is refused, and whose fire time the stored state still
says (nobody rescheduled the job), writes the stored state with the next run time it computed. An
application whose job changed since it read it, and which did not change the next run time
itself, writes its definition with the stored state's next run time. Each is one conditional
update on the document's write revision, retried a few times; anything else stands as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from .._core import Row, WriteRecord
from ._fields import FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD, is_integer
from ._leases import LEASE_FIELD, is_held_by_others, read_lease

__all__ = ["ConcurrentChanges", "LookupMarks"]

logger = logging.getLogger("jobshelf.shared")

#: Conditional writes tried before giving up (the document kept changing meanwhile).
_ATTEMPTS = 3
#: Fire times closer than this (seconds) are the same.
_SAME = 1e-6


class _Looked(NamedTuple):
    job_id: Any
    revision: Any
    next_run_time: float | None


class LookupMarks:
    """What the application's thread last read with ``lookup_job``: APScheduler's ``modify_job``,
    ``pause_job``, ``resume_job`` and ``reschedule_job`` read the job, change it and write it back
    on the same thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def mark(self, job_id: Any, revision: Any, next_run_time: float | None) -> None:
        self._local.looked = _Looked(job_id, revision, next_run_time)

    def take(self, job_id: Any) -> _Looked | None:
        """The mark for ``job_id``, if the last lookup on this thread was of it (used up)."""
        looked = getattr(self._local, "looked", None)
        self._local.looked = None
        return looked if looked is not None and looked.job_id == job_id else None


class ConcurrentChanges:
    """The two merges, on one store's jobs collection.

    :param collection: the jobs collection
    :param decode: a stored row's checked state (nothing imported)
    :param encode: a state encoded for writing, in the store's format (or ``stored`` if the
        store's format cannot hold it)
    :param document: the fields a record is stored with
    """

    def __init__(
        self,
        collection: Any,
        *,
        decode: Callable[[Row], dict[str, Any]],
        encode: Callable[[dict[str, Any], Any], WriteRecord],
        document: Callable[[WriteRecord], dict[str, Any]],
    ) -> None:
        self.collection = collection
        self._decode = decode
        self._encode = encode
        self._document = document

    def holder_over_change(
        self, record: WriteRecord, fire_time: float, lease: dict[str, Any], *, me: str, dead: frozenset[str]
    ) -> bool:
        """The holder's write-back of ``record`` was refused: if the job still says a fire time
        at or before ``fire_time`` (the one just submitted) and no other live process holds it,
        write its stored state with ``record``'s next run time and the holder's ``lease``.
        True when written."""
        for _ in range(_ATTEMPTS):
            found = self._read(record.id)
            if found is None:
                return False
            document, state = found
            if not _still_at(document, state, fire_time, me, dead):
                return False
            state["next_run_time"] = _as_datetime(record.next_run_time)
            if self._write(document, state, lease):
                logger.info('Job "%s" was changed by another process while this one ran it: the change is '
                            "kept, with the next run time this run set", record.id)  # fmt: skip
                return True
        return False

    def finished_over_change(
        self, job_id: Any, fire_time: float, finish: Callable[[dict[str, Any]], bool], *, me: str,
        dead: frozenset[str],
    ) -> bool:  # fmt: skip
        """The holder's finishing write (an update or a delete) of a job whose last fire time it
        submitted was refused: ``finish`` it under the changed job's revision if that still says a
        fire time at or before ``fire_time`` and no other live process holds it. True when done."""
        for _ in range(_ATTEMPTS):
            found = self._read(job_id)
            if found is None:
                return False
            document, state = found
            if not _still_at(document, state, fire_time, me, dead):
                return False
            if finish({"_id": job_id, REVISION_FIELD: document[REVISION_FIELD]}):
                return True
        return False

    def application_over_change(self, record: WriteRecord, looked: Any) -> bool | None:
        """The application's conditional write of ``record`` (read as ``looked``) was refused:
        the job changed since. If the application did not change the next run time itself, write
        its definition with the stored next run time (``True``); ``False`` when the job is gone;
        ``None`` to write ``record`` as it is (the application moved the schedule)."""
        if not _same_time(record.next_run_time, looked.next_run_time):
            return None
        for _ in range(_ATTEMPTS):
            found = self._read(record.id)
            if found is None:  # gone; or nothing to merge with (quarantined meanwhile): written as is
                return None if self.collection.find_one({"_id": record.id}, ["_id"]) is not None else False
            document, stored = found
            state = self._decode(Row(record.id, record.data, record.format))
            state["next_run_time"] = stored.get("next_run_time")
            if self._write(document, state, None):
                logger.info('Job "%s" was run by another process since it was read: the change is written '
                            "with the next run time that run set", record.id)  # fmt: skip
                return True
        return None

    def _read(self, job_id: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The document and its decoded state; ``None`` when it is gone, quarantined, unreadable or
        has no revision to write it under."""
        document = self.collection.find_one({"_id": job_id})
        if document is None or QUARANTINE_FIELD in document or not is_integer(document.get(REVISION_FIELD)):
            return None
        row = Row(job_id, document.get("job_state"), document.get(FORMAT_FIELD), document.get(REVISION_FIELD))
        try:
            return document, self._decode(row)
        except Exception as exc:  # the core quarantines it at its next read
            logger.debug('Job "%s": the stored state cannot be merged with (%s)', job_id, exc)
            return None

    def _write(self, document: dict[str, Any], state: dict[str, Any], lease: dict[str, Any] | None) -> bool:
        merged = self._document(self._encode(state, document.get(FORMAT_FIELD)))
        del merged["_id"]
        update: dict[str, Any] = {"$set": merged}
        if lease is None:
            update["$unset"] = {LEASE_FIELD: ""}  # an application's change releases any lease
        else:
            merged.update(lease)
        condition = {"_id": document["_id"], REVISION_FIELD: document[REVISION_FIELD]}
        return bool(self.collection.update_one(condition, update).matched_count)


def _still_at(document: dict[str, Any], state: dict[str, Any], fire_time: float, me: str,
              dead: frozenset[str]) -> bool:  # fmt: skip
    """True when the holder that submitted ``fire_time`` may still advance the job: no other live
    process claimed it since, and its state was neither paused nor moved past that fire time."""
    held = read_lease(document.get(LEASE_FIELD))
    if held is not None and held.token is not None and is_held_by_others(held, time.time(), me, dead):
        return False  # another process claimed it since: its state stands
    stored = state.get("next_run_time")
    return stored is not None and datetime_to_utc_timestamp(stored) <= fire_time + _SAME


def _same_time(left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return left is right
    return abs(left - right) <= _SAME


def _as_datetime(timestamp: float | None) -> Any:
    return None if timestamp is None else utc_timestamp_to_datetime(timestamp)
