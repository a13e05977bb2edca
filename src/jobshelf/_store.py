"""The store core: APScheduler's job store contract, written once for every database.

:class:`StoreCore` does everything a jobshelf store does the same way whatever its database:
encoding for storage (format tag, size limit, allow-list, lazy migration), reading rows into jobs
(accept, decode, validate, quarantine), the start-time format check, the quarantine operations,
and keeping failures out of APScheduler's scheduler loop. An adapter subclasses it and implements
the ``_`` primitives below in its database's terms (see :mod:`jobshelf.mongodb` and
:mod:`jobshelf.memory`).
"""

from __future__ import annotations

import datetime as dt
import pickle
import random
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from ._exceptions import DeserializationError, JobshelfError, SerializationError, UnacceptedFormatError
from ._jobstate import job_to_state, state_to_job
from ._policy import CallablePolicy, validate_state
from ._resolve import resolve_serializer
from ._rows import MigrationResult, QuarantinedJob, Row, StoredJob, WriteRecord, public_error_name
from ._serializer import (
    Serializer,
    SerializerSpec,
    dump_state,
    format_name,
    is_pickle_family,
    load_state,
    stores_callables_by_value,
)

__all__ = ["DEFAULT_MAX_STATE_BYTES", "UNTAGGED_FORMAT", "StoreCore"]

#: Documents without a format tag were written by the stock store: they are pickle.
UNTAGGED_FORMAT = "pickle"
#: The default ``max_state_bytes``: what fits in a 16 MiB MongoDB document beside its other fields.
DEFAULT_MAX_STATE_BYTES = 16 * 1024 * 1024 - 16 * 1024

_revisions = random.Random()
#: APScheduler's loop: an exception from update_job/remove_job called there kills its thread.
_SCHEDULER_LOOP = BaseScheduler._process_jobs.__code__


class _Format:
    """One accepted format: its serializer and what the store needs to know about it."""

    __slots__ = ("by_value", "decoder", "name", "serializer", "text")

    def __init__(self, serializer: Serializer, name: str | None = None) -> None:
        self.serializer = serializer
        self.decoder: Serializer = serializer  # what reads it (restricted under an allow-list)
        self.name = name or format_name(serializer)
        self.by_value = stores_callables_by_value(serializer)
        self.text = bool(getattr(serializer, "text", False))


class _RestrictedDecoder:
    """A pickle-family serializer read through its ``loads_restricted`` under an allow-list."""

    def __init__(self, serializer: Any, policy: CallablePolicy) -> None:
        self.format_name = format_name(serializer)
        self._loads = serializer.loads_restricted
        self._allows_global = policy.allows_global

    def dumps(self, state: dict[str, Any], /) -> bytes:  # pragma: no cover - never encodes
        raise NotImplementedError

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return self._loads(data, self._allows_global)  # type: ignore[no-any-return]


class StoreCore(BaseJobStore):  # type: ignore[misc]
    """The job store logic every jobshelf store shares; adapters add the database.

    :param serializer: how new and updated jobs are encoded (any ``serializer=`` spec)
    :param accept: the formats read (default: the serializer's own, plus untagged stock pickle
        documents for a pickle-family serializer)
    :param pickle_protocol: the pickle protocol of a pickle or cloudpickle serializer
    :param allowed_callables: module names or ``"module:qualname"`` patterns a job may call;
        ``None`` (default) allows any
    :param allow_by_value: with ``allowed_callables``, also allow callables stored by value
    :param max_state_bytes: the largest encoded state written or decoded
    """

    #: Exceptions of the adapter's database that mean "try again later" (connection lost, no
    #: primary). Writes failing with them are kept and retried instead of raised into the loop.
    _transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        *,
        serializer: SerializerSpec = None,
        accept: Iterable[SerializerSpec] | None = None,
        pickle_protocol: Any = pickle.HIGHEST_PROTOCOL,
        allowed_callables: Iterable[str] | None = None,
        allow_by_value: bool = False,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        super().__init__()
        self.serializer: Serializer = resolve_serializer(serializer, pickle_protocol=pickle_protocol)
        self._format = _Format(self.serializer)
        self._formats: dict[str, _Format] = {self._format.name: self._format}
        self._add_accepted(accept)
        self._policy = CallablePolicy(allowed_callables, allow_by_value=allow_by_value)
        if self._policy.restricts and not self._policy.allow_by_value:
            for accepted in self._formats.values():
                if callable(getattr(accepted.serializer, "loads_restricted", None)):
                    accepted.decoder = _RestrictedDecoder(accepted.serializer, self._policy)
        if type(max_state_bytes) is not int or max_state_bytes < 1:
            raise ValueError(f"max_state_bytes must be a positive int, got {max_state_bytes!r}")
        self.max_state_bytes = max_state_bytes
        self._loop = threading.local()  # set while APScheduler's loop processes this store
        self._pending: dict[str, WriteRecord | None] = {}  # writes kept through an outage
        self._pending_lock = threading.Lock()
        self._kept_format_warned: set[str] = set()

    def _add_accepted(self, accept: Iterable[SerializerSpec] | None) -> None:
        if accept is None:
            if is_pickle_family(self.serializer):
                self._formats.setdefault(UNTAGGED_FORMAT, _Format(self.serializer, UNTAGGED_FORMAT))
            return
        if isinstance(accept, (str, bytes)):
            raise TypeError(
                f"accept must be a list of formats, got the string {accept!r}; write accept=[{accept!r}]"
            )
        for spec in accept:
            if isinstance(spec, str) and spec in self._formats:
                continue
            if spec == UNTAGGED_FORMAT and is_pickle_family(self.serializer):
                self._formats[UNTAGGED_FORMAT] = _Format(self.serializer, UNTAGGED_FORMAT)
                continue
            decoder = _Format(resolve_serializer(spec))
            self._formats.setdefault(decoder.name, decoder)

    # ------------------------------------------------------------------------- configuration

    @property
    def format(self) -> str:
        """The format name new and updated jobs are written in."""
        return self._format.name

    @property
    def accepted_formats(self) -> frozenset[str]:
        """The format names this store decodes."""
        return frozenset(self._formats)

    @property
    def allowed_callables(self) -> tuple[str, ...] | None:
        """The callable allow-list, or ``None`` when any callable is allowed."""
        return self._policy.patterns

    def serializer_for(self, fmt: str | None) -> Serializer | None:
        """The serializer this store reads format ``fmt`` with (``None``: untagged), if accepted."""
        accepted = self._formats.get(UNTAGGED_FORMAT if fmt is None else fmt)
        return accepted.serializer if accepted is not None else None

    def accepts(self, fmt: Any) -> bool:
        """True when rows tagged ``fmt`` (``None``: untagged) are decoded by this store."""
        return _is_tag(fmt) and (UNTAGGED_FORMAT if fmt is None else fmt) in self._formats

    # ------------------------------------------------------------------------- the contract

    def start(self, scheduler: Any, alias: str) -> None:
        """Prepare the storage and refuse to start on jobs in formats it does not accept.

        Logs one warning with the number of quarantined jobs when there are any.

        :raises UnacceptedFormatError: the store holds jobs in formats outside ``accept``
        """
        super().start(scheduler, alias)
        self._prepare()
        counts = self.format_counts()
        unaccepted = {fmt: n for fmt, n in counts.items() if not self.accepts(fmt)}
        if unaccepted:
            raise self._unaccepted_error(unaccepted)
        quarantined = self._count_quarantined()
        if quarantined:
            self._logger.warning(
                "%s holds %d quarantined job%s (kept, not scheduled): list them with "
                "get_quarantined_jobs() or `jobshelf quarantine list`",
                self._where(), quarantined, "" if quarantined == 1 else "s",
            )  # fmt: skip

    def format_counts(self) -> dict[str, int]:
        """Count the scheduled (not quarantined) jobs per format, untagged ones as pickle.

        A malformed document (a format tag that is not a string, no state) is not counted: it is
        quarantined when read.
        """
        counts: dict[str, int] = {}
        for fmt, count in self._format_counts().items():
            if _is_tag(fmt):
                name = UNTAGGED_FORMAT if fmt is None else fmt
                counts[name] = counts.get(name, 0) + count
        return counts

    def lookup_job(self, job_id: str) -> Job | None:
        """Return the job, or ``None`` when there is none (or it is quarantined or unaccepted)."""
        self._flush_pending()
        row = self._fetch(job_id)
        if row is None:
            return None
        jobs = self._rows_to_jobs((row,))
        return jobs[0] if jobs else None

    def get_due_jobs(self, now: dt.datetime) -> list[Job]:
        """Jobs due at ``now``, by next run time then id."""
        self._flush_pending()
        jobs = self._rows_to_jobs(self._fetch_due(datetime_to_utc_timestamp(now)))
        if sys._getframe(1).f_code is _SCHEDULER_LOOP:
            # APScheduler's loop, on this thread, until it asks get_next_run_time(): the updates
            # and removals it makes meanwhile must not raise.
            self._loop.active = True
        return jobs

    def get_next_run_time(self) -> dt.datetime | None:
        """The earliest next run time of the scheduled jobs, or ``None``.

        When the database cannot be reached, a time ``jobstore_retry_interval`` from now, so the
        scheduler tries again then instead of losing its thread.
        """
        self._loop.active = False
        try:
            timestamp = self._next_timestamp()
        except self._transient_errors as exc:
            retry = float(getattr(self._scheduler, "jobstore_retry_interval", 10))
            self._logger.warning("%s: cannot read the next run time (%s); retrying in %ss",
                                 self._where(), exc, retry)  # fmt: skip
            return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=retry)
        return utc_timestamp_to_datetime(timestamp) if timestamp is not None else None

    def get_all_jobs(self) -> list[Job]:
        """Every scheduled job by next run time then id, paused jobs last."""
        self._flush_pending()
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
        self._flush_pending()
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

    def update_job(self, job: Job) -> None:
        """Rewrite the job (in the configured format, or the one it was read in if the configured
        one cannot hold it) and release it from quarantine.

        Inside APScheduler's loop it never raises: a job removed meanwhile is logged, a database
        outage keeps the write until the database is back, and a job that cannot be written is
        quarantined rather than left to fire again.

        :raises JobLookupError: no such job (outside the loop)
        :raises SerializationError: the job cannot be encoded; nothing was written (outside the loop)
        """
        in_loop = self._in_loop()
        try:
            record = self._encode_for_update(job)
        except JobshelfError as exc:
            if not in_loop:
                raise
            self._quarantine_unwritable(job, exc)
            return
        except Exception as exc:  # the database, read for the lazy-migration fallback
            if not in_loop:
                raise
            self._write_failed(job.id, "update", exc)
            return
        try:
            self._flush_pending()
            matched = self._replace(record)
        except self._transient_errors as exc:
            self._keep_pending(job.id, record, exc)
            return
        except Exception as exc:
            if not in_loop:
                raise
            self._write_failed(job.id, "update", exc)
            return
        if not matched:
            if in_loop:
                self._logger.info('Job "%s" was removed while it ran; not updated', job.id)
                return
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        """Delete the job (quarantined or not).

        :raises JobLookupError: no such job (outside APScheduler's loop)
        """
        try:
            self._flush_pending()
            deleted = self._delete(job_id)
        except self._transient_errors as exc:
            self._keep_pending(job_id, None, exc)
            return
        except Exception as exc:
            if not self._in_loop():
                raise
            self._write_failed(job_id, "removal", exc)
            return
        if not deleted:
            if self._in_loop():
                self._logger.info('Job "%s" was removed already', job_id)
                return
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        """Delete every scheduled job in an accepted format.

        Quarantined jobs are kept (they are evidence: list them with :meth:`get_quarantined_jobs`
        and remove them one by one with :meth:`remove_job`), and so are jobs in formats this store
        does not accept (they belong to other stores).
        """
        with self._pending_lock:
            self._pending.clear()
        self._delete_all()

    # ------------------------------------------------------------------------- quarantine

    def get_quarantined_jobs(self) -> list[QuarantinedJob]:
        """Every quarantined job, oldest quarantine first."""
        return [_quarantined(row, record) for row, record in self._fetch_quarantined(None)]

    def restore_quarantined_job(self, job_id: str) -> Job:
        """Decode a quarantined job again and, if it now decodes, put it back in the schedule.

        Use it after the cause is fixed (the missing module deployed, the trigger registered, the
        signing key added). The job keeps the next run time it had when it was quarantined.

        :raises JobLookupError: no quarantined job has that id
        :raises DeserializationError: it still cannot be decoded; it stays quarantined with the
            new reason
        """
        found = self._fetch_quarantined(job_id)
        if not found:
            raise JobLookupError(job_id)
        row, record = found[0]
        try:
            job = self._decode(row)
        except Exception as exc:
            self._quarantine_row(row, exc, warn=False)
            raise DeserializationError(f"job {job_id!r} is still quarantined: {exc}") from exc
        next_run_time = record.get("next_run_time")
        if not self._unquarantine(row, next_run_time if isinstance(next_run_time, float) else None):
            current = self._fetch(job_id)
            if current is None:
                raise JobLookupError(job_id)
            if current.quarantined:
                raise DeserializationError(f"job {job_id!r} changed while it was being restored; try again")
        self._logger.info('Job "%s" restored from quarantine', job_id)
        return job

    # ------------------------------------------------------------------------- operators' tools

    def stored_jobs(self) -> Iterator[StoredJob]:
        """Every stored job as it is stored, quarantined and foreign ones included, by id."""
        return self._scan()

    def decode_state(self, job_id: str) -> dict[str, Any]:
        """The decoded, checked state of a stored job, without resolving its callable.

        :raises JobLookupError: no such job
        :raises DeserializationError: it cannot be decoded (nothing is quarantined)
        """
        row = self._fetch(job_id)
        if row is None:
            raise JobLookupError(job_id)
        return self._decode_state(row)

    def decode_stored(self, stored: StoredJob) -> dict[str, Any]:
        """:meth:`decode_state` for a job already read with :meth:`stored_jobs`."""
        return self._decode_state(Row(stored.id, stored.data, stored.format))

    def migrate_job(self, job_id: str, target: SerializerSpec, *, dry_run: bool = False) -> MigrationResult:
        """Rewrite one stored job in the ``target`` format, only if it is unchanged since it was read.

        Decoding and encoding work on the state: the callable is not resolved, so nothing of the
        application is imported. A job that changes meanwhile is read again (three tries); every
        outcome but ``"migrated"`` leaves the job exactly as it was.
        """
        encoder = target if isinstance(target, _Format) else _Format(resolve_serializer(target))
        for _ in range(3):
            row = self._fetch(job_id)
            if row is None:
                return MigrationResult("missing", "no such job")
            if row.quarantined:
                return MigrationResult("quarantined", "restore or remove it first")
            if (UNTAGGED_FORMAT if row.format is None else row.format) == encoder.name:
                return MigrationResult("already")
            try:
                state = self._decode_state(row)
            except Exception as exc:
                return MigrationResult("undecodable", str(exc))
            try:
                record = self._encode_state(state, encoder)
            except JobshelfError as exc:
                return MigrationResult("unencodable", str(exc))
            if dry_run:
                return MigrationResult("would migrate")
            if self._replace_unchanged(row, record):
                return MigrationResult("migrated")
        return MigrationResult("changed", "it was rewritten on every try (a scheduler is updating it)")

    # ------------------------------------------------------------------------- encoding

    def _encode(self, job: Job, target: _Format) -> WriteRecord:
        state = job_to_state(job, by_value=target.by_value, format_name=target.name)
        return self._encode_state(state, target)

    def _encode_state(self, state: dict[str, Any], target: _Format) -> WriteRecord:
        job_id = state["id"]
        self._policy.check_outgoing(state, job_id)
        try:
            data = dump_state(target.serializer, state)
        except SerializationError as exc:
            raise SerializationError(f"job {job_id!r} cannot be stored: {exc}") from exc
        if len(data) > self.max_state_bytes:
            raise SerializationError(
                f"job {job_id!r} is {len(data)} bytes encoded in {target.name}, more than "
                f"max_state_bytes={self.max_state_bytes}; nothing was written. Pass smaller arguments "
                "(an id to look the data up), or raise max_state_bytes"
            )
        return WriteRecord(
            job_id,
            datetime_to_utc_timestamp(state["next_run_time"]),
            data.decode("utf-8") if target.text else data,
            target.name,
            _revisions.getrandbits(63),
        )

    def _encode_for_update(self, job: Job) -> WriteRecord:
        try:
            return self._encode(job, self._format)
        except SerializationError as exc:
            # Lazy migration must not lose a job the configured format cannot hold: keep it in the
            # accepted format it is stored in.
            row = self._fetch(job.id)
            stored = None if row is None or not self.accepts(row.format) else (row.format or UNTAGGED_FORMAT)
            if stored is None or stored == self._format.name:
                raise
            record = self._encode(job, self._formats[stored])
            if job.id not in self._kept_format_warned:
                self._kept_format_warned.add(job.id)
                self._logger.warning(
                    'Job "%s" stays in format %s: %s cannot hold it (%s). Change its arguments, or '
                    "keep %r in accept=[...]",
                    job.id, stored, self._format.name, exc, stored,
                )  # fmt: skip
            return record

    # ------------------------------------------------------------------------- decoding

    def _rows_to_jobs(self, rows: Iterable[Row]) -> list[Job]:
        jobs = []
        formats = self._formats
        for row in rows:
            # Quarantined jobs are out of the schedule; unaccepted formats belong to other stores.
            if row.quarantined:
                continue
            fmt = row.format
            if _is_tag(fmt) and (UNTAGGED_FORMAT if fmt is None else fmt) not in formats:
                continue  # a malformed tag is not skipped: decoding quarantines it
            try:
                job = self._decode(row)
            except Exception as exc:
                self._quarantine_row(row, exc)
                continue
            if row.due_at is not None:
                job.next_run_time = utc_timestamp_to_datetime(row.due_at)
            jobs.append(job)
        return jobs

    def _decode(self, row: Row) -> Job:
        return state_to_job(self._decode_state(row), self._scheduler, self._alias)

    def _decode_state(self, row: Row) -> dict[str, Any]:
        """Decode and check a row's state; its callable is not resolved (nothing imported)."""
        fmt = row.format
        if not _is_tag(fmt):
            raise DeserializationError(f"job {row.id!r} has a malformed format tag {_short(fmt)}")
        decoder = self._formats.get(UNTAGGED_FORMAT if fmt is None else fmt)
        if decoder is None:
            raise DeserializationError(
                f"job {row.id!r} is stored in format {fmt!r}, which this store does not accept "
                f"(accepts {sorted(self._formats)}); add {fmt!r} to accept=[...] to read it"
            )
        data = row.data
        if type(data) is str:
            data = data.encode("utf-8")
        elif isinstance(data, bytes):
            data = bytes(data)  # a bytes subclass (bson.Binary of another subtype) as plain bytes
        else:
            raise DeserializationError(
                f"job {row.id!r} has no encoded state (found {type(data).__name__}, expected bytes)"
            )
        if len(data) > self.max_state_bytes:
            raise DeserializationError(
                f"job {row.id!r} is {len(data)} bytes, more than max_state_bytes="
                f"{self.max_state_bytes}; it was not decoded"
            )
        try:
            state = load_state(decoder.decoder, data)
        except DeserializationError as exc:
            raise DeserializationError(f"job {row.id!r} ({decoder.name}): {exc}") from exc
        validate_state(state, row.id, by_value=decoder.by_value)
        self._policy.check_state(state, row.id)
        return state

    def _quarantine_row(self, row: Row, exc: BaseException, *, warn: bool = True) -> None:
        record = {
            "error_type": public_error_name(exc),
            "message": str(exc),
            "cause": repr(exc.__cause__) if exc.__cause__ is not None else None,
            "format": row.format if isinstance(row.format, str) else UNTAGGED_FORMAT,
            "at": dt.datetime.now(dt.timezone.utc),
        }
        try:
            done = self._quarantine(row, record)
        except self._transient_errors as error:
            self._logger.warning('Job "%s" could not be decoded (%s) nor quarantined now (%s)',
                                 row.id, exc, error)  # fmt: skip
            return
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
        self._logger.error('Job "%s" ran but cannot be written back: %s', job.id, exc)
        try:
            row = self._fetch(job.id)
            if row is not None:
                self._quarantine_row(row, exc)
        except Exception as error:
            self._write_failed(job.id, "quarantine", error)

    def _write_failed(self, job_id: str, what: str, exc: BaseException) -> None:
        """A write nobody can be told about (inside APScheduler's loop, or kept through an outage)
        failed for good: say what was not written, and why."""
        self._logger.error(
            'The %s of job "%s" could not be written (%s: %s); it is not retried: the job fires again '
            "as its stored next run time says",
            what, job_id, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip

    # ------------------------------------------------------------------------- outages

    def _keep_pending(self, job_id: str, record: WriteRecord | None, exc: BaseException) -> None:
        with self._pending_lock:
            self._pending.pop(job_id, None)
            self._pending[job_id] = record
            count = len(self._pending)
        self._logger.warning(
            '%s cannot be reached (%s): the %s of job "%s" is kept in memory and written when it is '
            "back (%d write%s waiting)",
            self._where(), exc, "removal" if record is None else "update", job_id, count,
            "" if count == 1 else "s",
        )  # fmt: skip

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        with self._pending_lock:
            while self._pending:
                job_id, record = next(iter(self._pending.items()))
                try:
                    if record is None:
                        self._delete(job_id)
                    elif not self._replace(record):
                        self._logger.info('Job "%s" was removed during the outage; update dropped', job_id)
                except self._transient_errors:
                    raise  # still unreachable: kept, tried again at the next read or write
                except Exception as exc:  # refused for good: keeping it would fail every read
                    self._write_failed(job_id, "update" if record else "removal", exc)
                del self._pending[job_id]
        self._logger.warning("%s is back: the writes kept during the outage are written", self._where())

    # ------------------------------------------------------------------------- helpers

    def _unaccepted_error(self, counts: Mapping[str, int]) -> UnacceptedFormatError:
        listing = ", ".join(f"{fmt!r} ({n} job{'s' if n != 1 else ''})" for fmt, n in counts.items())
        accepted = sorted(self.accepted_formats | set(counts))
        return UnacceptedFormatError(
            f"{self._where()} holds jobs in formats this store does not accept: {listing}. Nothing "
            f"was read or changed. To read them, pass accept={accepted!r} (each job is rewritten in "
            f"{self.format!r} when it is next updated), or point this store at another collection.",
            counts,
        )

    def _where(self) -> str:
        return type(self).__name__

    def _in_loop(self) -> bool:
        """True while APScheduler's loop, on this thread, processes this store's due jobs."""
        return bool(getattr(self._loop, "active", False))

    # ------------------------------------------------------------------------- adapter primitives

    def _prepare(self) -> None:
        """Create indexes or whatever the storage needs at start."""

    def _fetch(self, job_id: str) -> Row | None:
        """The row stored under ``job_id`` (quarantined or not), or ``None``."""
        raise NotImplementedError

    def _fetch_due(self, timestamp: float) -> Iterable[Row]:
        """Rows with ``next_run_time <= timestamp``, by next run time then id."""
        raise NotImplementedError

    def _fetch_all(self) -> Iterable[Row]:
        """Every row not quarantined, by next run time (paused first) then id."""
        raise NotImplementedError

    def _next_timestamp(self) -> float | None:
        """The earliest next run time of rows in accepted formats."""
        raise NotImplementedError

    def _insert(self, record: WriteRecord) -> bool:
        """Insert; ``False`` when the id is taken."""
        raise NotImplementedError

    def _replace(self, record: WriteRecord) -> bool:
        """Overwrite the stored job and release it from quarantine; ``False`` when there is none."""
        raise NotImplementedError

    def _delete(self, job_id: str) -> bool:
        """Delete; ``False`` when there is no such job."""
        raise NotImplementedError

    def _delete_all(self) -> None:
        """Delete every row not quarantined whose format is accepted."""
        raise NotImplementedError

    def _format_counts(self) -> dict[Any, int]:
        """Rows not quarantined that hold a state, per stored format tag (``None``: untagged)."""
        raise NotImplementedError

    def _count_quarantined(self) -> int:
        """How many rows are quarantined."""
        raise NotImplementedError

    def _quarantine(self, row: Row, record: dict[str, Any]) -> bool:
        """Quarantine the row if it is unchanged since it was read: store ``record`` plus the row's
        next run time, and take it out of the schedule. ``False`` when it changed meanwhile."""
        raise NotImplementedError

    def _fetch_quarantined(self, job_id: str | None) -> list[tuple[Row, dict[str, Any]]]:
        """Quarantined rows with their records (one id, or all), oldest quarantine first."""
        raise NotImplementedError

    def _unquarantine(self, row: Row, next_run_time: float | None) -> bool:
        """Put an unchanged quarantined row back in the schedule; ``False`` when it changed."""
        raise NotImplementedError

    def _replace_unchanged(self, row: Row, record: WriteRecord) -> bool:
        """Overwrite the row with ``record`` only if it is unchanged since it was read."""
        raise NotImplementedError

    def _scan(self) -> Iterator[StoredJob]:
        """Every stored row as it is, by id."""
        raise NotImplementedError


def _is_tag(fmt: Any) -> bool:
    return fmt is None or type(fmt) is str


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _quarantined(row: Row, record: dict[str, Any]) -> QuarantinedJob:
    at = record.get("at")
    if isinstance(at, dt.datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)  # BSON dates come back naive, in UTC
    next_run_time = record.get("next_run_time")
    data = row.data
    return QuarantinedJob(
        id=row.id,
        format=str(record.get("format") or UNTAGGED_FORMAT),
        error_type=str(record.get("error_type", "")),
        message=str(record.get("message", "")),
        at=at if isinstance(at, dt.datetime) else None,
        next_run_time=utc_timestamp_to_datetime(next_run_time) if isinstance(next_run_time, float) else None,
        size=len(data) if isinstance(data, (bytes, str)) else 0,
    )
