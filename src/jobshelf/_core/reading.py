"""Rows to jobs: accept, decode, validate, quarantine, and the index treated as a hint.

The decoded state is authoritative for what runs and when. Every other field of a stored row is a
hint that, whatever value it holds, can at most delay or skip its own job:

- the indexed next run time decides only which rows are read; a row read as due whose state is
  not due is skipped and its index rewritten from the state (or, if that write fails, left out of
  the next-run-time query and remembered by its state's time, so the loop cannot spin on it);
- an index value that is no time at all (non-finite, beyond the calendar, not a number) is never
  handed to APScheduler;
- a shared store's abandoned fire time is used only when it is one of the trigger's fire times
  just before the state's next run time, at most :data:`MAX_PENDING_FIRE_TIMES` of them (so it
  can never add run times the state's trigger does not have, nor more than that many).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Iterable
from typing import Any

from apscheduler.job import Job
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from .._exceptions import DeserializationError
from .._jobstate import state_to_job
from .._policy import CallablePolicy, bounded_next_fire_time, validate_state
from .._serializer import decode_with
from .adapter import StorageAdapter
from .formats import Format, FormatTable
from .rows import Row, WriteRecord

__all__ = ["MAX_PENDING_FIRE_TIMES", "MAX_SUSPECTS", "Reading", "as_timestamp"]

#: The most rows whose index could not be repaired that a store remembers.
MAX_SUSPECTS = 10_000
#: The most fire times before a job's next run time that an abandoned run may take back: a shared
#: store's holder records the earliest fire time of the job still going on in it, at most this many
#: back. (With a jittered trigger each step is jittered, so a pending time more than one fire time
#: back may not match; the job then runs as its state says, with a warning.)
MAX_PENDING_FIRE_TIMES = 100
_MIN_TIMESTAMP = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc).timestamp()
_MAX_TIMESTAMP = dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc).timestamp()


def as_timestamp(value: Any) -> float | None:
    """A stored next run time as a UTC timestamp APScheduler can turn into a datetime, or
    ``None`` when it is no such thing (any other type, non-finite, beyond the calendar)."""
    if type(value) not in (float, int):
        return None
    timestamp = float(value)
    if not (math.isfinite(timestamp) and _MIN_TIMESTAMP <= timestamp <= _MAX_TIMESTAMP):
        return None
    return timestamp


class Reading(StorageAdapter):
    """The read half of the store core (mixed into :class:`~.store.StoreCore`)."""

    _formats: FormatTable
    _format: Format
    _policy: CallablePolicy
    _logger: logging.Logger
    _scheduler: Any
    _alias: str
    max_state_bytes: int
    _suspects: dict[Any, float | None]
    _suspects_lock: threading.Lock

    def _quarantine_row(self, row: Row, exc: BaseException, *, warn: bool = True) -> None:
        raise NotImplementedError  # the quarantine operations'

    def _encode_state(self, state: dict[str, Any], target: Format) -> WriteRecord:
        raise NotImplementedError  # the store's

    def _init_reading(self) -> None:
        # rows whose index disagrees with their state and could not be rewritten: id -> the
        # state's next run time (None: paused)
        self._suspects = {}
        self._suspects_lock = threading.Lock()

    def _rows_to_jobs(self, rows: Iterable[Row], now: float | None = None) -> list[Job]:
        """Decode rows into jobs; with ``now``, only the jobs due by their state at ``now``."""
        jobs = []
        formats = self._formats
        for row in rows:
            # Quarantined jobs are out of the schedule; unaccepted formats belong to other stores.
            if row.quarantined or (
                (row.format is None or type(row.format) is str) and not formats.accepts(row.format)
            ):
                if now is not None:  # read as due, never run here: its index must not wake the loop
                    self._remember_suspect(row.id, None)
                continue
            try:
                state, catch_up = self._decode_checked(row, now)
            except Exception as exc:
                self._quarantine_row(row, exc)
                continue
            caught_up = catch_up is not None and now is not None
            if caught_up and catch_up is not None:
                state = self._catch_up(row, state, catch_up)
            fire_time = self._fire_time(row, state)
            state_time = _state_time(state)
            if now is not None:
                due = fire_time is not None and fire_time <= now
                if not due:
                    # caught up to a time still ahead (a jittered trigger): stored as caught up,
                    # so the next pass does not catch up again, to a new time ahead, for ever
                    if not (caught_up and self._store_caught_up(row, state)):
                        self._distrust_index(row, state)
                    continue
            try:
                job = state_to_job(state, self._scheduler, self._alias)
            except Exception as exc:
                self._quarantine_row(row, exc)
                continue
            if fire_time is not None and fire_time != state_time:  # a shared store's abandoned fire time
                job.next_run_time = utc_timestamp_to_datetime(fire_time)
            jobs.append(job)
        return jobs

    def _fire_time(self, row: Row, state: dict[str, Any]) -> float | None:
        """When the row's job is due: the state's next run time or, for a shared store's abandoned
        fire time, that time if the trigger's fire times from it reach the state's (within
        :data:`MAX_PENDING_FIRE_TIMES`): the holder submitted them all and ran none."""
        state_time = _state_time(state)
        if state_time is None:
            return None
        pending = as_timestamp(row.due_at)
        if pending is None or pending >= state_time:
            return state_time
        if _leads_to(state["trigger"], pending, state_time):
            return pending
        self._logger.warning(
            'Job "%s": the fire time recorded in its lease (%r) is not a fire time of its trigger '
            "before %s; ignored, the job runs as its state says",
            row.id, row.due_at, state["next_run_time"],
        )  # fmt: skip
        return state_time

    def _catch_up(self, row: Row, state: dict[str, Any], catch_up: dt.datetime) -> dict[str, Any]:
        """A due job with more missed fire times than APScheduler should enumerate: hand it over
        from the fire time it catches up to (the skipped ones were misses, or would coalesce)."""
        self._logger.warning(
            'Job "%s" missed too many fire times to run them all (its next run time was %s): it '
            "resumes at %s; the fire times between were skipped",
            row.id, state["next_run_time"], catch_up,
        )  # fmt: skip
        return {**state, "next_run_time": catch_up}

    def _store_caught_up(self, row: Row, state: dict[str, Any]) -> bool:
        """Write a caught-up state over ``row`` if it is unchanged; whether it was written."""
        try:
            return self._replace_unchanged(row, self._encode_state(state, self._format))
        except Exception as exc:
            self._logger.debug("could not store job %r as caught up: %s", row.id, exc)
            return False

    def _distrust_index(self, row: Row, state: dict[str, Any]) -> None:
        """A row read as due whose state is not: rewrite its index from the state, or remember
        the state's time if that write fails (so the loop does not spin on the row)."""
        state_time = _state_time(state)
        try:
            current = self._fetch(row.id)  # with its revision, for the conditional write
        except Exception:
            current = row
        if current is None or current.quarantined or current.data != row.data:
            return  # changed meanwhile: the next read sees the new state
        try:
            repaired = self._set_index(current, state_time)
        except Exception as exc:
            repaired = False
            self._logger.debug("could not rewrite the index of job %r: %s", row.id, exc)
        if repaired:
            self._logger.warning(
                'Job "%s": its indexed next run time disagreed with its state (next run %s); '
                "rewritten from the state",
                row.id,
                state["next_run_time"],
            )
            self._forget_suspect(row.id)
            return
        self._remember_suspect(row.id, state_time)

    def _remember_suspect(self, job_id: Any, state_time: float | None) -> None:
        """Leave the row out of the next-run-time query; ``state_time``: when its state is due."""
        with self._suspects_lock:
            if job_id in self._suspects or len(self._suspects) < MAX_SUSPECTS:
                self._suspects[job_id] = state_time

    def _forget_suspect(self, job_id: Any) -> None:
        if self._suspects:
            with self._suspects_lock:
                self._suspects.pop(job_id, None)

    def _next_timestamp(self) -> float | None:
        """The earliest next run time, from the index, never trusting a value it holds."""
        with self._suspects_lock:
            excluded = dict(self._suspects)
        timestamp: float | None = None
        for _ in range(8):
            found = self._earliest(excluded)
            if found is None:
                break
            value, job_id = found
            timestamp = as_timestamp(value)
            if timestamp is not None:
                break
            # Not a time: read the row's state and rewrite its index (bounded: at most 8 a call).
            row = self._fetch(job_id)
            state_time: float | None = None
            if row is not None and not row.quarantined:
                try:
                    state = self._decode_state(row)
                except Exception as exc:
                    self._quarantine_row(row, exc)
                else:
                    self._distrust_index(row, state)
                    state_time = _state_time(state)
            excluded[job_id] = state_time
        remembered = [t for t in excluded.values() if t is not None]
        if timestamp is not None:
            remembered.append(timestamp)
        return min(remembered, default=None)

    def _decode_state(self, row: Row) -> dict[str, Any]:
        """Decode and check a row's state; its callable is not resolved (nothing imported)."""
        return self._decode_checked(row)[0]

    def _decode_checked(
        self, row: Row, now: float | None = None
    ) -> tuple[dict[str, Any], dt.datetime | None]:
        """Decode and check a row's state; with it, the fire time a due job with too many missed
        fire times catches up to (``None`` for every other job)."""
        decoder = self._formats.decoder_for(row.format, row.id)
        data = row.data
        if type(data) is str:
            data = data.encode("utf-8")
        elif isinstance(data, bytes):
            data = bytes(data)  # a bytes subclass (bson.Binary of another subtype) as plain bytes
        else:
            raise DeserializationError(
                f"job {row.id!r} has no encoded state (found {type(data).__name__}, expected bytes)"
            )
        limit = self.max_state_bytes
        if len(data) > limit:
            raise DeserializationError(
                f"job {row.id!r} is {len(data)} bytes, more than max_state_bytes={limit}; it was not decoded"
            )
        try:
            state = decode_with(decoder.name, decoder.decoder, data)
        except DeserializationError as exc:
            raise DeserializationError(f"job {row.id!r} ({decoder.name}): {exc}") from exc
        moment = utc_timestamp_to_datetime(now) if now is not None else None
        catch_up = validate_state(state, row.id, by_value=decoder.by_value, now=moment)
        self._policy.check_state(state, row.id)
        return state, catch_up


def _leads_to(trigger: Any, pending: float, state_time: float) -> bool:
    """Whether ``pending`` is a fire time of ``trigger`` at most :data:`MAX_PENDING_FIRE_TIMES`
    before ``state_time`` (its fire times from ``pending`` on reach ``state_time``)."""
    jitter = getattr(trigger, "jitter", None) or 0
    try:
        fire_time = utc_timestamp_to_datetime(pending)
        for _ in range(MAX_PENDING_FIRE_TIMES):
            following = bounded_next_fire_time(trigger, fire_time, fire_time)
            if following is None:
                return False
            timestamp = datetime_to_utc_timestamp(following)
            if abs(timestamp - state_time) <= jitter:
                return True
            if timestamp > state_time or following <= fire_time:
                return False
            fire_time = following
    except Exception:
        return False
    return False


def _state_time(state: dict[str, Any]) -> float | None:
    next_run_time = state["next_run_time"]
    return datetime_to_utc_timestamp(next_run_time) if next_run_time is not None else None
