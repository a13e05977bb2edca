"""Execution history (opt-in): one record per fire time the scheduler submitted, and how it ended.

Records are built from APScheduler's job events by :mod:`.history_writer` and written in batches
by a thread of their own; an adapter keeps them through a :class:`HistorySink` (a sibling
collection for MongoDB, the :class:`~jobshelf.MemoryStorage` for the memory store).

A stored record is data: whoever can write the history collection can put any value in any
field, so every field is checked when it is read back (:func:`record_from_document`), and reading
never fails on a record, however malformed.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from apscheduler.util import asbool

from .._exceptions import JobshelfError
from .history_writer import LIMITS, HistoryRecorder, cap_text
from .options import as_number

__all__ = [
    "DEFAULT_HISTORY_BUFFER",
    "DEFAULT_HISTORY_TTL",
    "HISTORY_OPTIONS",
    "LIMITS",
    "OUTCOMES",
    "HistoryOperations",
    "HistoryQuery",
    "HistorySink",
    "HistorySummary",
    "Holder",
    "RunError",
    "RunRecord",
    "cap_text",
    "record_from_document",
]

#: How a submitted fire time ended: it ran, it raised, it started too late (past
#: ``misfire_grace_time``), or it was skipped because ``max_instances`` were running.
OUTCOMES = ("executed", "error", "missed", "skipped")
#: The store options that configure history.
HISTORY_OPTIONS = frozenset({"history", "history_ttl", "history_buffer"})
#: Seconds a record is kept (the TTL index on ``finished_at``): 7 days.
DEFAULT_HISTORY_TTL = 7 * 24 * 3600
#: Records waiting to be written, at most; past it the oldest waiting ones are dropped.
DEFAULT_HISTORY_BUFFER = 10_000
_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)


# ----------------------------------------------------------------------------- records


class Holder(NamedTuple):
    """The process and store instance that ran a fire time.

    :ivar host: the host name
    :ivar pid: the process id (``None`` if the record holds none)
    :ivar instance: ``host:pid:random``, unique per store instance (as shared mode's lease holders)
    """

    host: str
    pid: int | None
    instance: str


class RunError(NamedTuple):
    """What a failed run raised.

    :ivar type: the exception's class, ``module.QualName`` (builtins without the module)
    :ivar message: ``str(exception)``, at most ``LIMITS["message"]`` characters
    :ivar traceback: the formatted traceback, at most ``LIMITS["traceback"]`` characters (its end)
    """

    type: str
    message: str
    traceback: str


class RunRecord(NamedTuple):
    """One fire time of one job, as :meth:`get_job_history` returns it.

    :ivar job_id: the job's id
    :ivar scheduled_run_time: the fire time (aware, UTC); ``None`` only for a malformed record
    :ivar submitted_at: when the scheduler's loop picked the job up for this fire time (aware, UTC)
    :ivar finished_at: when the run ended, was found missed, or was skipped (aware, UTC)
    :ivar duration: seconds from ``submitted_at`` to ``finished_at`` for ``executed`` and
        ``error`` (waiting for a free worker included); ``None`` for ``missed`` and ``skipped``
    :ivar outcome: one of :data:`OUTCOMES` (``"unknown"`` for a malformed record)
    :ivar error: for ``error``, what the job raised; else ``None``
    :ivar holder: the process and store instance that ran it
    :ivar duplicate: ``True`` when another record for the same job and fire time was written
        first: this fire time ran more than once
    """

    job_id: str
    scheduled_run_time: dt.datetime | None
    submitted_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None
    outcome: str
    error: RunError | None
    holder: Holder | None
    duplicate: bool


class HistorySummary(NamedTuple):
    """Counts of the records whose fire time is at or after ``since``.

    :ivar since: the start of the period (aware, UTC)
    :ivar outcomes: records per outcome (malformed ones under ``"unknown"``)
    :ivar holders: records per holder instance (``"unknown"`` when a record names none)
    :ivar duplicates: records marked duplicate
    """

    since: dt.datetime
    outcomes: dict[str, int]
    holders: dict[str, int]
    duplicates: int

    @property
    def runs(self) -> int:
        """Every record of the period."""
        return sum(self.outcomes.values())


class HistoryQuery(NamedTuple):
    """What :meth:`HistorySink.read` is asked for (all checked already).

    :ivar job_id: one job's records, or every job's (``None``)
    :ivar since: only fire times at or after this UTC timestamp
    :ivar outcomes: only these outcomes (``None``: any)
    :ivar duplicates: only fire times that ran more than once (every record of each)
    :ivar limit: at most this many records
    """

    job_id: str | None
    since: float | None
    outcomes: tuple[str, ...] | None
    duplicates: bool
    limit: int


# ----------------------------------------------------------------------------- reading records back


def _text(value: Any, limit: int) -> str:
    if type(value) is str:
        return cap_text(value, limit)
    try:
        return cap_text(f"<{type(value).__name__} {value!r}>", limit)
    except Exception:  # a value whose repr fails (memory store): its type is enough
        return f"<{type(value).__name__}>"


def _time(value: Any) -> dt.datetime | None:
    """A stored time (a UTC timestamp, or a date as BSON gives it back) as an aware datetime."""
    if type(value) in (float, int):
        if not math.isfinite(value):
            return None
        try:
            return _EPOCH + dt.timedelta(seconds=value)
        except (OverflowError, ValueError):
            return None
    if type(value) is dt.datetime:
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    return None


def _holder(value: Any) -> Holder | None:
    if type(value) is not dict:
        return None
    pid = value.get("pid")
    return Holder(
        host=_text(value.get("host", ""), LIMITS["host"]),
        pid=int(pid) if isinstance(pid, int) and not isinstance(pid, bool) else None,  # bson's Int64 too
        instance=_text(value.get("instance", ""), LIMITS["instance"]),
    )


def _error(value: Any) -> RunError | None:
    if type(value) is not dict:
        return None
    return RunError(
        type=_text(value.get("type", ""), LIMITS["type"]),
        message=_text(value.get("message", ""), LIMITS["message"]),
        traceback=_text(value.get("traceback", ""), LIMITS["traceback"]),
    )


def record_from_document(document: Any) -> RunRecord:
    """A stored record, checked field by field: whatever a field holds, this never raises.

    A field of the wrong type reads as ``None`` (times, duration, error, holder), ``"unknown"``
    (an outcome not in :data:`OUTCOMES`) or as its type and ``repr`` (the job id); text is cut to
    :data:`LIMITS`. Nothing is decoded as code.
    """
    fields: dict[str, Any] = document if type(document) is dict else {}
    outcome = fields.get("outcome")
    duration: Any = fields.get("duration")
    return RunRecord(
        job_id=_text(fields.get("job_id"), LIMITS["job_id"]),
        scheduled_run_time=_time(fields.get("scheduled_run_time")),
        submitted_at=_time(fields.get("submitted_at")),
        finished_at=_time(fields.get("finished_at")),
        duration=float(duration) if type(duration) in (float, int) and math.isfinite(duration) else None,
        outcome=outcome if type(outcome) is str and outcome in OUTCOMES else "unknown",
        error=_error(fields.get("error")),
        holder=_holder(fields.get("holder")),
        duplicate=fields.get("duplicate") is True,
    )


# ----------------------------------------------------------------------------- the adapter's primitive


class HistorySink(abc.ABC):
    """Where an adapter keeps execution records (documents shaped as :mod:`.history_writer` builds
    them: ``_id``, ``job_id``, ``scheduled_run_time`` (UTC timestamp), ``submitted_at``,
    ``finished_at`` (aware datetimes), ``duration``, ``outcome``, ``error``, ``holder``).

    :ivar name: where the records go, as operators name it (a collection name)
    :ivar transient_errors: errors that mean "the database cannot be reached now": the records
        wait and are written later
    """

    name: str
    transient_errors: tuple[type[BaseException], ...] = ()

    def prepare(self) -> None:  # noqa: B027 - optional
        """Create what the records need (indexes) when the store starts."""

    @abc.abstractmethod
    def write(self, documents: Sequence[dict[str, Any]]) -> None:
        """Store the records. Writing the same record (``_id``) again stores it once. A record for
        a job and fire time that already has one is stored too, with ``copy`` set to the next
        free number (the first has ``copy`` 0) and ``duplicate`` set to ``True``; never refused."""

    @abc.abstractmethod
    def read(self, query: HistoryQuery) -> list[Any]:
        """Stored documents as they are, newest fire time first (then job id, then copy); only
        those whose fire time is a number."""

    @abc.abstractmethod
    def summary(self, since: float) -> tuple[dict[Any, int], dict[Any, int], int]:
        """For fire times at or after ``since``: records per stored outcome, per stored holder
        instance, and the number marked duplicate (stored values as they are)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether anything has been recorded here (the collection exists)."""


# ----------------------------------------------------------------------------- options


def history_name(value: Any) -> str | None:
    """``history=``: ``False``/``None``/``"false"`` (off), ``True``/``"true"`` (on, default name),
    or a name.

    :raises ValueError: for anything else, naming the option
    """
    if value is None or isinstance(value, bool):
        return "" if value else None
    if isinstance(value, str):
        try:
            return "" if asbool(value) else None
        except ValueError:
            pass
        if value.strip() and "$" not in value and "\x00" not in value and not value.startswith("system."):
            return value
    raise ValueError(
        f"history must be true, false or a collection name (no '$', not 'system.'), got {value!r}"
    )


# ----------------------------------------------------------------------------- the store's API


class HistoryOperations:
    """The store's execution-history API (mixed into :class:`~.store.StoreCore`)."""

    _logger: logging.Logger
    _scheduler: Any
    _alias: str

    def _history_sink(self, name: str | None) -> HistorySink:
        """The adapter's sink for records named ``name`` (``None``: the default name)."""
        raise JobshelfError(f"{type(self).__name__} cannot keep an execution history")

    def _where(self) -> str:
        raise NotImplementedError  # the store's

    def _in_loop(self) -> bool:
        raise NotImplementedError  # the store's

    def _configure_history(self, history: Any, history_ttl: Any, history_buffer: Any) -> None:
        name = history_name(history)
        self._history_wanted = name is not None
        self._history_requested_name = name or None
        if name is None and (history_ttl, history_buffer) != (DEFAULT_HISTORY_TTL, DEFAULT_HISTORY_BUFFER):
            raise ValueError(
                f"history_ttl={history_ttl!r} and history_buffer={history_buffer!r} apply to the execution "
                "history only; pass history=True (or a collection name) or leave them out"
            )
        self.history_ttl: float = float(as_number("history_ttl", history_ttl))
        self.history_buffer: int = int(as_number("history_buffer", history_buffer, integer=True))
        self._history_sink_made: HistorySink | None = None
        self._history_recorder: HistoryRecorder | None = None
        self._history_dropped_before = 0  # by the recorders of earlier starts

    @property
    def history(self) -> str | None:
        """Where execution records go (a collection name), or ``None`` when history is off."""
        return self._sink().name if self._history_wanted else None

    @property
    def history_dropped(self) -> int:
        """Records lost since the store was made: dropped past ``history_buffer`` while the
        database could not be reached, refused by it, or still waiting at shutdown (each loss is
        logged)."""
        recorder = self._history_recorder
        return self._history_dropped_before + (int(recorder.dropped) if recorder is not None else 0)

    def _sink(self) -> HistorySink:
        if not self._history_wanted:
            raise JobshelfError(
                f"{self._where()} keeps no execution history: create the store with history=True "
                "(or history='collection name') to record runs"
            )
        if self._history_sink_made is None:
            self._history_sink_made = self._history_sink(self._history_requested_name)
        return self._history_sink_made

    def get_job_history(
        self,
        job_id: str | None = None,
        *,
        since: dt.datetime | dt.timedelta | None = None,
        outcome: str | Iterable[str] | None = None,
        limit: int = 100,
        duplicates: bool = False,
    ) -> list[RunRecord]:
        """Execution records, newest fire time first.

        :param job_id: one job's records (default: every job's)
        :param since: only fire times at or after this aware datetime, or this long ago (a
            ``timedelta``)
        :param outcome: only records with this outcome, or any of these (see :data:`OUTCOMES`)
        :param limit: at most this many records
        :param duplicates: only fire times that ran more than once, with every record of each
        :raises JobshelfError: the store was created without ``history=``
        :raises ValueError: an argument of the wrong kind
        """
        if job_id is not None and type(job_id) is not str:
            raise ValueError(f"job_id must be a string, got {job_id!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number of at least 1, got {limit!r}")
        query = HistoryQuery(job_id, _since(since), _outcomes(outcome), bool(duplicates), limit)
        return [record_from_document(document) for document in self._sink().read(query)]

    def get_history_summary(
        self, since: dt.datetime | dt.timedelta = dt.timedelta(hours=1)
    ) -> HistorySummary:
        """Counts of the records whose fire time is at or after ``since`` (default: the last hour)
        per outcome and per holder, and how many are duplicates.

        :raises JobshelfError: the store was created without ``history=``
        """
        start = _since(since)
        assert start is not None
        outcomes_stored, holders_stored, duplicates = self._sink().summary(start)
        outcomes: dict[str, int] = {}
        for value, count in outcomes_stored.items():
            key = value if type(value) is str and value in OUTCOMES else "unknown"
            outcomes[key] = outcomes.get(key, 0) + int(count)
        holders: dict[str, int] = {}
        for value, count in holders_stored.items():
            key = _text(value, LIMITS["instance"]) if value is not None else "unknown"
            holders[key] = holders.get(key, 0) + int(count)
        return HistorySummary(_EPOCH + dt.timedelta(seconds=start), outcomes, holders, int(duplicates))

    # ------------------------------------------------------------------------- the store's hooks

    def _start_history(self, scheduler: Any, alias: str) -> None:
        """Record this store's jobs' events from now on (``start()``)."""
        if not self._history_wanted:
            return
        self._stop_history()
        self._history_dropped_before = self.history_dropped
        sink = self._sink()
        try:
            sink.prepare()
        except Exception as exc:  # history must not stop the scheduler: record without the indexes
            self._logger.error("%s: the execution history's indexes could not be created (%s: %s); "
                               "records are written without them", self._where(), type(exc).__name__,
                               exc)  # fmt: skip
        # a shared MongoDB store names itself (``holder``) once started: records use that name
        recorder = HistoryRecorder(sink, self.history_buffer, self._logger, self._where,
                                   lambda: getattr(self, "holder", None))  # fmt: skip
        recorder.start(scheduler, alias)
        self._history_recorder = recorder

    def _stop_history(self) -> None:
        """Stop recording and write what waits, for a few seconds at most (``shutdown()``)."""
        recorder = getattr(self, "_history_recorder", None)
        if recorder is not None:
            recorder.stop()  # kept: history_dropped still counts its losses

    def _note_due(self, jobs: Sequence[Any]) -> None:
        """The loop read these jobs as due: the time it picked them up (their submission)."""
        recorder = self._history_recorder
        if recorder is not None and jobs and self._in_loop():
            recorder.picked(jobs)


def _since(since: Any) -> float | None:
    if since is None:
        return None
    if isinstance(since, dt.timedelta):
        return (dt.datetime.now(_UTC) - since).timestamp()
    if isinstance(since, dt.datetime):
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError(f"since must be an aware datetime (or a timedelta), got naive {since!r}")
        return since.timestamp()
    raise ValueError(f"since must be an aware datetime or a timedelta, got {since!r}")


def _outcomes(outcome: Any) -> tuple[str, ...] | None:
    if outcome is None:
        return None
    chosen = (outcome,) if isinstance(outcome, str) else tuple(outcome)
    unknown = [value for value in chosen if value not in OUTCOMES]
    if unknown or not chosen:
        raise ValueError(f"outcome must be one or more of {', '.join(OUTCOMES)}; got {outcome!r}")
    return chosen
