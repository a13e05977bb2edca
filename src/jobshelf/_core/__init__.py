"""The store core: APScheduler's job store contract, written once for every database.

One concept per module, each depending only on the ones listed before it:

- ``rows``: the records passed between the core and an adapter (no database types);
- ``adapter``: :class:`StorageAdapter`, the primitives a database implements, documented;
- ``loop``: the scheduler's loop pass, known by construction;
- ``options``: options checked in jobshelf's words;
- ``formats``: the configured and accepted formats and their decoders;
- ``writing``: jobs to records, the outbox kept through an outage;
- ``reading``: rows to jobs (decode, validate, the index as a hint);
- ``quarantine``: quarantining, listing and restoring;
- ``tools``: operators' tools (stored jobs, decoding without resolving, migration);
- ``store``: :class:`StoreCore`, the contract composed of the above.
"""

from __future__ import annotations

from .adapter import StorageAdapter
from .formats import UNTAGGED_FORMAT
from .options import check_unknown
from .rows import MalformedTag, MigrationResult, QuarantinedJob, Row, StoredJob, WriteRecord
from .store import CORE_OPTIONS, DEFAULT_MAX_STATE_BYTES, StoreCore

__all__ = [
    "CORE_OPTIONS",
    "DEFAULT_MAX_STATE_BYTES",
    "UNTAGGED_FORMAT",
    "MalformedTag",
    "MigrationResult",
    "QuarantinedJob",
    "Row",
    "StorageAdapter",
    "StoreCore",
    "StoredJob",
    "WriteRecord",
    "check_unknown",
]
