"""Quarantine: jobs that cannot be decoded are kept out of the schedule, listed, and restored.

A quarantine record is data another program may have written: every field of it is checked when
it is listed, and a restore takes the next run time from the decoded state, never from the record.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from .._exceptions import DeserializationError, JobshelfError
from .._jobstate import state_to_job
from .formats import UNTAGGED_FORMAT
from .reading import Reading, as_timestamp
from .rows import QuarantinedJob, Row, public_error_name

__all__ = ["MAX_RECORD_TEXT", "QuarantineOperations"]

#: The longest text kept from (or shown of) a quarantine record's message.
MAX_RECORD_TEXT = 4000


class QuarantineOperations(Reading):
    """Quarantining rows, listing and restoring them (mixed into :class:`~.store.StoreCore`)."""

    def get_quarantined_jobs(self) -> list[QuarantinedJob]:
        """Every quarantined job, oldest quarantine first."""
        return [_quarantined(row, record) for row, record in self._fetch_quarantined(None)]

    def restore_quarantined_job(self, job_id: str) -> Job:
        """Decode a quarantined job again and, if it now decodes, put it back in the schedule.

        Use it after the cause is fixed (the missing module deployed, the trigger registered, the
        signing key added). The job's next run time is its state's.

        :raises JobLookupError: no quarantined job has that id
        :raises DeserializationError: it still cannot be decoded; it stays quarantined with the
            new reason
        """
        found = self._fetch_quarantined(job_id)
        if not found:
            raise JobLookupError(job_id)
        row, _record = found[0]
        try:
            state = self._decode_state(row)
            job = state_to_job(state, self._scheduler, self._alias)
        except Exception as exc:
            self._quarantine_row(row, exc, warn=False)
            raise DeserializationError(f"job {job_id!r} is still quarantined: {exc}") from exc
        next_run_time = state["next_run_time"]
        timestamp = datetime_to_utc_timestamp(next_run_time) if next_run_time is not None else None
        if not self._unquarantine(row, timestamp):
            current = self._fetch(job_id)
            if current is None:
                raise JobLookupError(job_id)
            if current.quarantined:
                raise DeserializationError(f"job {job_id!r} changed while it was being restored; try again")
        self._forget_suspect(job_id)
        self._logger.info('Job "%s" restored from quarantine', job_id)
        return job

    def _quarantine_row(self, row: Row, exc: BaseException, *, warn: bool = True) -> None:
        record = {
            "error_type": public_error_name(exc),
            "message": str(exc)[:MAX_RECORD_TEXT],
            "cause": repr(exc.__cause__)[:MAX_RECORD_TEXT] if exc.__cause__ is not None else None,
            "format": row.format if isinstance(row.format, str) else UNTAGGED_FORMAT,
            "at": dt.datetime.now(dt.timezone.utc),
        }
        try:
            done = self._quarantine(row, record)
        except Exception as error:
            self._logger.warning('Job "%s" could not be decoded (%s) nor quarantined now (%s)',
                                 row.id, exc, error)  # fmt: skip
            return
        self._forget_suspect(row.id)
        if not warn:
            return
        if done:
            self._logger.warning(
                'Unable to restore job "%s" (%s) -- quarantined it, not removed: %s',
                row.id, record["format"], exc, exc_info=not isinstance(exc, JobshelfError),
            )  # fmt: skip
        else:
            self._logger.info('Job "%s" changed while being quarantined; left as is', row.id)

    def _quarantine_unwritable(self, job: Job, exc: BaseException) -> None:
        """A job that ran but cannot be written back: quarantined rather than left to fire again."""
        self._logger.error('Job "%s" ran but cannot be written back: %s', job.id, exc)
        try:
            row = self._fetch(job.id)
        except Exception as error:
            self._logger.error('Job "%s" could not be read to quarantine it: %s', job.id, error)
            return
        if row is not None:
            self._quarantine_row(row, exc)


def _text(value: Any) -> str:
    return value[:MAX_RECORD_TEXT] if isinstance(value, str) else ""


def _quarantined(row: Row, record: dict[str, Any]) -> QuarantinedJob:
    at = record.get("at")
    if isinstance(at, dt.datetime):
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.timezone.utc)  # BSON dates come back naive, in UTC
    else:
        at = None
    timestamp = as_timestamp(record.get("next_run_time"))
    data = row.data
    return QuarantinedJob(
        id=row.id,
        format=_text(record.get("format")) or UNTAGGED_FORMAT,
        error_type=_text(record.get("error_type")),
        message=_text(record.get("message")),
        at=at,
        next_run_time=utc_timestamp_to_datetime(timestamp) if timestamp is not None else None,
        size=len(data) if isinstance(data, (bytes, str)) else 0,
    )
