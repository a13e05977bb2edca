"""Operators' tools: stored jobs as they are, decoding without resolving, and migration.

The ``jobshelf`` CLI is built on these public methods only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apscheduler.jobstores.base import JobLookupError

from .._exceptions import JobshelfError
from .._resolve import resolve_serializer
from .._serializer import SerializerSpec
from .formats import UNTAGGED_FORMAT, Format
from .quarantine import QuarantineOperations
from .rows import MigrationResult, Row, StoredJob, WriteRecord

__all__ = ["OperatorTools"]


class OperatorTools(QuarantineOperations):
    """Reading and rewriting stored jobs for operators (mixed into :class:`~.store.StoreCore`)."""

    def _encode_state(self, state: dict[str, Any], target: Format) -> WriteRecord:
        raise NotImplementedError  # the store's

    def stored_jobs(self) -> Iterator[StoredJob]:
        """Every stored job as it is stored, quarantined and foreign ones included, by id."""
        return self._scan()

    def stored_job(self, job_id: Any) -> StoredJob | None:
        """One stored job as it is stored (quarantined included), or ``None``; nothing decoded."""
        return self._fetch_stored(job_id)

    def stored_format_counts(self) -> dict[Any, int]:
        """Every stored job counted by its format tag exactly as stored (``None``: untagged),
        quarantined jobs included; a malformed tag is counted under its own value."""
        return self._format_counts(quarantined=True)

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
        encoder = target if isinstance(target, Format) else Format(resolve_serializer(target))
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
