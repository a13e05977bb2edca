"""``StoreCore``: APScheduler's job store contract, written once for every database.

It is composed of one concept per module: the format table (:mod:`.formats`), reading rows into
jobs (:mod:`.reading`), quarantine (:mod:`.quarantine`), operators' tools (:mod:`.tools`), writing
and its one error policy (:mod:`.writing`), the loop context (:mod:`.loop`) and checked options
(:mod:`.options`). An adapter subclasses it and implements the primitives of :mod:`.adapter`.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable, Iterable
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from .._exceptions import JobshelfError, SerializationError
from .._jobstate import job_to_state
from .._policy import CallablePolicy, check_outgoing_schedule
from .._resolve import resolve_serializer
from .._serializer import Serializer, SerializerSpec
from .formats import UNTAGGED_FORMAT, Format, FormatTable
from .history import DEFAULT_HISTORY_BUFFER, DEFAULT_HISTORY_TTL, HISTORY_OPTIONS, HistoryOperations
from .loop import in_loop_of, install_loop_context
from .options import as_bool, as_number
from .rows import WriteRecord
from .tools import OperatorTools
from .writing import Outbox, encode_state, log_unwritten

__all__ = ["CORE_OPTIONS", "DEFAULT_MAX_STATE_BYTES", "StoreCore"]

#: The default ``max_state_bytes``: what fits in a 16 MiB MongoDB document beside its other fields.
DEFAULT_MAX_STATE_BYTES = 16 * 1024 * 1024 - 16 * 1024
#: The options every jobshelf store takes.
CORE_OPTIONS = (
    frozenset(
        {"serializer", "accept", "pickle_protocol", "allowed_callables", "allow_by_value", "max_state_bytes"}
    )
    | HISTORY_OPTIONS
)


class StoreCore(HistoryOperations, OperatorTools, BaseJobStore):  # type: ignore[misc]
    """The job store logic every jobshelf store shares; adapters add the database.

    :param serializer: how new and updated jobs are encoded (any ``serializer=`` spec)
    :param accept: the formats read (default: the serializer's own, plus untagged stock pickle
        documents for a pickle-family serializer)
    :param pickle_protocol: the pickle protocol of a pickle or cloudpickle serializer
    :param allowed_callables: module names or ``"module:qualname"`` patterns a job may call;
        ``None`` (default) allows any
    :param allow_by_value: with ``allowed_callables``, also allow callables stored by value
    :param max_state_bytes: the largest encoded state written or decoded
    :param history: record every fire time's run (``True``, or a collection name); see
        :meth:`get_job_history`
    :param history_ttl: seconds execution records are kept (default 7 days)
    :param history_buffer: the most execution records waiting while the database is unreachable
    """

    def __init__(
        self,
        *,
        serializer: SerializerSpec = None,
        accept: Iterable[SerializerSpec] | None = None,
        pickle_protocol: Any = pickle.HIGHEST_PROTOCOL,
        allowed_callables: Iterable[str] | None = None,
        allow_by_value: bool = False,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        history: bool | str = False,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        history_buffer: int = DEFAULT_HISTORY_BUFFER,
    ) -> None:
        super().__init__()
        self.serializer: Serializer = resolve_serializer(serializer, pickle_protocol=pickle_protocol)
        self._formats = FormatTable(self.serializer, accept)
        self._format = self._formats.configured
        self._policy = CallablePolicy(
            allowed_callables,
            allow_by_value=as_bool("allow_by_value", allow_by_value),
        )
        if self._policy.restricts:  # by-value callables too: admitted by the restricted reader
            self._formats.restrict(self._policy.allows_global)
        self.max_state_bytes: int = as_number("max_state_bytes", max_state_bytes, integer=True)
        self._outbox = Outbox(self._logger, self._where)
        self._kept_format_warned: set[Any] = set()
        self._closed = False
        self._init_reading()
        self._configure_history(history, history_ttl, history_buffer)  # execution history (opt-in)

    # ------------------------------------------------------------------------- configuration

    @property
    def format(self) -> str:
        """The format name new and updated jobs are written in."""
        return self._format.name

    @property
    def accepted_formats(self) -> frozenset[str]:
        """The format names this store decodes."""
        return self._formats.names

    @property
    def allowed_callables(self) -> tuple[str, ...] | None:
        """The callable allow-list, or ``None`` when any callable is allowed."""
        return self._policy.patterns

    def serializer_for(self, fmt: str | None) -> Serializer | None:
        """The serializer this store reads format ``fmt`` with (``None``: untagged), if accepted."""
        accepted = self._formats.get(fmt)
        return accepted.serializer if accepted is not None else None

    def accepts(self, fmt: Any) -> bool:
        """True when rows tagged ``fmt`` (``None``: untagged) are decoded by this store."""
        return self._formats.accepts(fmt)

    # ------------------------------------------------------------------------- the contract

    def start(self, scheduler: Any, alias: str) -> None:
        """Prepare the storage and refuse to start on jobs in formats it does not accept.

        Logs one warning with the number of quarantined jobs when there are any.

        :raises UnacceptedFormatError: the store holds jobs in formats outside ``accept``
        """
        super().start(scheduler, alias)
        self._closed = False
        install_loop_context(scheduler)
        self._prepare()
        unaccepted = self._unaccepted_format_counts()
        if unaccepted:
            raise self._formats.unaccepted_error(self._where(), unaccepted)
        quarantined = self._count_quarantined()
        if quarantined:
            self._logger.warning(
                "%s holds %d quarantined job%s (kept, not scheduled): list them with "
                "get_quarantined_jobs() or `jobshelf quarantine list`",
                self._where(), quarantined, "" if quarantined == 1 else "s",
            )  # fmt: skip
        self._start_history(scheduler, alias)  # execution history (opt-in)

    def shutdown(self) -> None:
        """Mark the store closed: the scheduler's last loop pass, which runs after its stores are
        shut down, is answered quietly (no jobs, no next run time)."""
        self._closed = True
        self._stop_history()  # execution history: the last records written

    def _unaccepted_format_counts(self) -> dict[str, int]:
        """Scheduled jobs in formats this store does not accept, per format name. An adapter may
        find them without counting the accepted ones, so that ``start()`` costs what the formats
        present cost, not what the collection holds."""
        return {fmt: n for fmt, n in self.format_counts().items() if not self.accepts(fmt)}

    def format_counts(self) -> dict[str, int]:
        """Count the scheduled (not quarantined) jobs per format, untagged ones as pickle.

        A malformed document (a format tag that is not a string, no state) is not counted: it is
        quarantined when read.
        """
        counts: dict[str, int] = {}
        for fmt, count in self._format_counts(quarantined=False).items():
            if fmt is None or type(fmt) is str:
                name = UNTAGGED_FORMAT if fmt is None else fmt
                counts[name] = counts.get(name, 0) + count
        return counts

    def lookup_job(self, job_id: str) -> Job | None:
        """Return the job, or ``None`` when there is none (or it is quarantined or unaccepted)."""
        self._flush_outbox()
        row = self._fetch(job_id)
        if row is None:
            return None
        jobs = self._rows_to_jobs((row,))
        if not jobs:
            return None
        job = jobs[0]
        if not self._in_loop():
            next_run_time = job.next_run_time
            self._looked_up(row, None if next_run_time is None else datetime_to_utc_timestamp(next_run_time))
        return job

    def get_due_jobs(self, now: dt.datetime) -> list[Job]:
        """Jobs due at ``now`` by their decoded state, by next run time then id."""
        if self._closed and self._in_loop():
            return []
        self._flush_outbox()
        timestamp = datetime_to_utc_timestamp(now)
        jobs = self._rows_to_jobs(self._fetch_due(timestamp), now=timestamp)
        self._note_due(jobs)  # execution history: when the loop picked them up
        return jobs

    def get_next_run_time(self) -> dt.datetime | None:
        """The earliest next run time of the scheduled jobs, or ``None``.

        Inside the scheduler's loop it never raises: when the database cannot be reached (or
        fails otherwise), a time ``jobstore_retry_interval`` from now, so the scheduler tries
        again then instead of losing its thread.
        """
        if self._closed and self._in_loop():
            return None
        try:
            timestamp = self._next_timestamp()
        except Exception as exc:
            if not self._in_loop() and not isinstance(exc, self.transient_errors):
                raise
            retry = float(getattr(self._scheduler, "jobstore_retry_interval", 10))
            self._logger.warning("%s: cannot read the next run time (%s); retrying in %ss",
                                 self._where(), exc, retry)  # fmt: skip
            return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=retry)
        return utc_timestamp_to_datetime(timestamp) if timestamp is not None else None

    def get_all_jobs(self) -> list[Job]:
        """Every scheduled job by next run time then id, paused jobs last."""
        self._flush_outbox()
        jobs = self._rows_to_jobs(self._fetch_all())
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job: Job) -> None:
        """Store a new job.

        :raises ConflictingIdError: a job with that id exists (the message says when it is
            quarantined, and how to restore or remove it)
        :raises SerializationError: the job cannot be encoded; nothing was written
        """
        record = self._encode(job, self._format)
        self._flush_outbox()
        if not self._insert(record):
            error = ConflictingIdError(job.id)
            existing = self._fetch(job.id)
            if existing is not None and existing.quarantined:
                error.args = (
                    f"job {job.id!r} exists but is quarantined (it could not be decoded): restore it "
                    f"with restore_quarantined_job({job.id!r}) (or `jobshelf quarantine restore "
                    f"{job.id}`), or delete it with remove_job({job.id!r}) before adding it again; "
                    "replace_existing=True overwrites it",
                )
            raise error
        self._forget_suspect(job.id)

    def update_job(self, job: Job) -> None:
        """Rewrite the job (in the configured format, or the one it was read in if the configured
        one cannot hold it) and release it from quarantine.

        Inside APScheduler's loop it never raises: a job removed meanwhile is logged, a database
        outage keeps the write until the database is back, and a job that cannot be written is
        quarantined rather than left to fire again.

        :raises JobLookupError: no such job (outside the loop)
        :raises SerializationError: the job cannot be encoded; nothing was written (outside the loop)
        """
        try:
            record = self._encode_for_update(job)
        except JobshelfError as exc:
            if not self._in_loop():
                raise
            self._quarantine_unwritable(job, exc)
            return
        except Exception as exc:  # the database, read for the lazy-migration fallback
            if not self._in_loop():
                raise
            log_unwritten(self._logger, job.id, "update", exc)
            return
        self._write(job.id, record, lambda: self._replace(record))

    def remove_job(self, job_id: str) -> None:
        """Delete the job (quarantined or not).

        :raises JobLookupError: no such job (outside APScheduler's loop)
        """
        self._write(job_id, None, lambda: self._delete(job_id))

    def remove_all_jobs(self) -> None:
        """Delete every scheduled job in an accepted format.

        Quarantined jobs are kept (they are evidence: list them with :meth:`get_quarantined_jobs`
        and remove them one by one with :meth:`remove_job`), and so are jobs in formats this store
        does not accept (they belong to other stores).
        """
        self._outbox.discard()
        self._delete_all()

    # ------------------------------------------------------------------------- writing

    def _write(self, job_id: Any, record: WriteRecord | None, write: Callable[[], bool]) -> None:
        """Run an update (``record``) or removal (``None``) under the one write-error policy.

        Outside the loop every failure raises (``JobLookupError`` when there is no such job).
        Inside it nothing raises: an unreachable database keeps the write in the outbox, any other
        failure is logged, and a job that is gone is noted.
        """
        what = "removal" if record is None else "update"
        if not self._in_loop():
            self._flush_outbox()
            if not write():
                raise JobLookupError(job_id)
            self._forget_suspect(job_id)
            return
        try:
            self._flush_outbox()
            done = write()
        except self.transient_errors as exc:
            self._outbox.keep(job_id, record, exc)
            return
        except Exception as exc:
            log_unwritten(self._logger, job_id, what, exc)
            return
        self._forget_suspect(job_id)
        if not done:
            self._logger.info('Job "%s" was removed already; its %s was not written', job_id, what)

    def _flush_outbox(self) -> None:
        self._outbox.flush(self, self.transient_errors)

    def _encode(self, job: Job, target: Format) -> WriteRecord:
        state = job_to_state(job, by_value=target.by_value, format_name=target.name)
        return self._encode_state(state, target)

    def _encode_state(self, state: dict[str, Any], target: Format) -> WriteRecord:
        self._policy.check_outgoing(state, state["id"])
        check_outgoing_schedule(state, state["id"])
        return encode_state(state, target, self.max_state_bytes)

    def _encode_for_update(self, job: Job) -> WriteRecord:
        try:
            return self._encode(job, self._format)
        except SerializationError as exc:
            # Lazy migration must not lose a job the configured format cannot hold: keep it in the
            # accepted format it is stored in.
            row = self._fetch(job.id)
            stored = self._formats.get(row.format) if row is not None else None
            if stored is None or stored is self._format:
                raise
            record = self._encode(job, stored)
            if job.id not in self._kept_format_warned:
                self._kept_format_warned.add(job.id)
                self._logger.warning(
                    'Job "%s" stays in format %s: %s cannot hold it (%s). Change its arguments, or '
                    "keep %r in accept=[...]",
                    job.id, stored.name, self._format.name, exc, stored.name,
                )  # fmt: skip
            return record

    # ------------------------------------------------------------------------- helpers

    def _where(self) -> str:
        return type(self).__name__

    def _in_loop(self) -> bool:
        """True while the scheduler's loop pass, on this thread or task, calls this store."""
        return in_loop_of(self._scheduler)
