"""The adapter interface: the primitives a database gives the store core, documented in one place.

An adapter (:mod:`jobshelf.mongodb`, :mod:`jobshelf.memory`) subclasses
:class:`~jobshelf._core.store.StoreCore` and implements these methods in its database's terms. The
core never sees a database type: it passes :class:`~.rows.Row`, :class:`~.rows.WriteRecord` and
:class:`~.rows.StoredJob` records.

Rules every primitive follows:

- Every field a primitive returns (a row's state, tag, revision, the index value) may hold any
  value another program wrote; the core validates all of it. A primitive must not fail on a
  malformed document: it returns it as it is.
- "Unchanged since it was read" means: the row's revision token (``Row.revision``, set on every
  jobshelf write) is still the stored one or, for a document without one (written by the stock
  store), its state bytes are.
- Errors of the database that mean "try again later" are the classes in
  :attr:`StorageAdapter.transient_errors`; the core decides what to do with every error (one
  write-error policy, :mod:`.writing`), never the adapter.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from .rows import Row, StoredJob, WriteRecord

__all__ = ["StorageAdapter"]


class StorageAdapter(abc.ABC):
    """The primitives a database implements for the store core."""

    #: Exceptions of the database that mean "try again later" (connection lost, no primary).
    transient_errors: tuple[type[BaseException], ...] = ()

    def _prepare(self) -> None:  # noqa: B027 - optional
        """Create indexes or whatever the storage needs at ``start()``."""

    def _looked_up(self, row: Row, next_run_time: float | None) -> None:  # noqa: B027 - optional
        """The application read ``row`` with ``lookup_job`` (its state says ``next_run_time``);
        an adapter whose jobs other processes change may bind the next write of it to what was
        read (APScheduler's ``modify_job`` reads, changes and writes back on one thread)."""

    # ------------------------------------------------------------------ reads

    @abc.abstractmethod
    def _fetch(self, job_id: Any) -> Row | None:
        """The row stored under ``job_id`` (quarantined or not), or ``None``."""

    @abc.abstractmethod
    def _fetch_due(self, timestamp: float) -> Iterable[Row]:
        """Rows whose indexed next run time is ``<= timestamp``, by next run time then id."""

    @abc.abstractmethod
    def _fetch_all(self) -> Iterable[Row]:
        """Every row not quarantined, by next run time (paused first) then id."""

    @abc.abstractmethod
    def _earliest(self, exclude: Collection[Any]) -> tuple[Any, Any] | None:
        """``(indexed next run time, id)`` of the row in an accepted format with the earliest
        numeric indexed next run time, leaving out the ids in ``exclude``; ``None`` if none."""

    @abc.abstractmethod
    def _format_counts(self, *, quarantined: bool) -> dict[Any, int]:
        """Rows that hold a state, per stored format tag as stored (``None``: untagged); with
        ``quarantined=False`` quarantined rows are left out."""

    @abc.abstractmethod
    def _count_quarantined(self) -> int:
        """How many rows are quarantined."""

    @abc.abstractmethod
    def _fetch_quarantined(self, job_id: Any | None) -> list[tuple[Row, dict[str, Any]]]:
        """Quarantined rows with their records (one id, or all), oldest quarantine first. A
        record that is not a mapping comes back as ``{}``."""

    @abc.abstractmethod
    def _fetch_stored(self, job_id: Any) -> StoredJob | None:
        """One row as it is stored (quarantined included), for operators' tools."""

    @abc.abstractmethod
    def _scan(self) -> Iterator[StoredJob]:
        """Every stored row as it is, by id."""

    # ------------------------------------------------------------------ writes

    @abc.abstractmethod
    def _insert(self, record: WriteRecord) -> bool:
        """Insert; ``False`` when the id is taken."""

    @abc.abstractmethod
    def _replace(self, record: WriteRecord) -> bool:
        """Overwrite the stored job and release it from quarantine; ``False`` when there is none."""

    @abc.abstractmethod
    def _delete(self, job_id: Any) -> bool:
        """Delete; ``False`` when there is no such job."""

    @abc.abstractmethod
    def _delete_all(self) -> None:
        """Delete every row not quarantined whose format is accepted."""

    @abc.abstractmethod
    def _replace_unchanged(self, row: Row, record: WriteRecord) -> bool:
        """Overwrite the row with ``record`` only if it is unchanged since it was read."""

    @abc.abstractmethod
    def _set_index(self, row: Row, timestamp: float | None) -> bool:
        """Set the row's indexed next run time, only if the row is unchanged since it was read
        (the index disagreed with the decoded state: the state is authoritative)."""

    @abc.abstractmethod
    def _quarantine(self, row: Row, record: dict[str, Any]) -> bool:
        """Quarantine the row if it is unchanged since it was read: store ``record`` and take it
        out of the schedule. ``False`` when it changed meanwhile."""

    @abc.abstractmethod
    def _unquarantine(self, row: Row, timestamp: float | None) -> bool:
        """Put an unchanged quarantined row back in the schedule with this indexed next run
        time; ``False`` when it changed meanwhile."""
