"""The records that pass between the store core and a store adapter (no database types here)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from .. import _exceptions

__all__ = [
    "MalformedTag",
    "MigrationResult",
    "QuarantinedJob",
    "Row",
    "StoredJob",
    "WriteRecord",
    "public_error_name",
]


class MalformedTag(str):
    """A stored format tag that is not a string, counted under its ``repr`` (never a format name)."""

    __slots__ = ()

    @classmethod
    def of(cls, fmt: Any) -> Any:
        """``fmt`` itself when it is a string or ``None`` (untagged), else a :class:`MalformedTag`."""
        return fmt if fmt is None or type(fmt) is str else cls(repr(fmt))


class Row(NamedTuple):
    """One stored job as an adapter read it. Nothing in it is validated yet.

    :ivar id: the stored id (``_id``)
    :ivar data: the encoded state as stored (bytes or str; anything, in a malformed document)
    :ivar format: the stored format tag; ``None`` for an untagged (stock) document
    :ivar revision: the write token jobshelf sets on every write; ``None`` if absent
    :ivar quarantined: the job is quarantined (out of the schedule)
    :ivar due_at: a fire time to hand to the scheduler instead of the state's next run time (a
        shared store's abandoned fire time, UTC timestamp)
    """

    id: Any
    data: Any
    format: Any = None
    revision: Any = None
    quarantined: bool = False
    due_at: float | None = None


class WriteRecord(NamedTuple):
    """An encoded job, ready for an adapter to write.

    :ivar id: the job id
    :ivar next_run_time: UTC timestamp, ``None`` when paused
    :ivar data: the encoded state: ``bytes``, or ``str`` for a text serializer
    :ivar format: the format tag
    :ivar revision: a fresh write token: conditional updates compare it
    """

    id: str
    next_run_time: float | None
    data: bytes | str
    format: str
    revision: int


class QuarantinedJob(NamedTuple):
    """A quarantined job, as :meth:`get_quarantined_jobs` lists it.

    :ivar id: the job id
    :ivar format: the format its state is stored in
    :ivar error_type: the public name of the error that quarantined it
    :ivar message: what went wrong, and what to do
    :ivar at: when it was quarantined (aware, UTC)
    :ivar next_run_time: its next run time when it was quarantined (aware, UTC), or ``None``
    :ivar size: the stored state's size in bytes
    """

    id: Any
    format: str
    error_type: str
    message: str
    at: dt.datetime | None
    next_run_time: dt.datetime | None
    size: int


class StoredJob(NamedTuple):
    """One stored job as it is, for operators' tools (nothing decoded).

    :ivar id: the stored id
    :ivar format: the format tag (``None``: untagged stock pickle; anything, if malformed)
    :ivar next_run_time: the stored UTC timestamp (``None``: paused or quarantined)
    :ivar data: the encoded state as stored
    :ivar quarantine: the quarantine record, or ``None``
    """

    id: Any
    format: Any
    next_run_time: Any
    data: Any
    quarantine: dict[str, Any] | None


class MigrationResult(NamedTuple):
    """What :meth:`migrate_job` did to one job.

    :ivar outcome: ``"migrated"``, ``"would migrate"`` (dry run), ``"already"`` (in the target
        format), ``"quarantined"``, ``"undecodable"``, ``"unencodable"`` (the target format cannot
        hold it), ``"changed"`` (rewritten by someone else on every try) or ``"missing"``;
        every outcome but the first leaves the job exactly as it was
    :ivar detail: why, for the outcomes that leave a job
    """

    outcome: str
    detail: str = ""


def public_error_name(exc: BaseException) -> str:
    """``jobshelf.DeserializationError`` rather than a private module path."""
    cls = type(exc)
    if getattr(_exceptions, cls.__name__, None) is cls and cls.__name__ in _exceptions.__all__:
        return f"jobshelf.{cls.__name__}"  # the package re-exports every public error
    return f"{cls.__module__}.{cls.__qualname__}"
