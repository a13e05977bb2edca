"""The MongoDB adapter: it speaks MongoDB only (documents, indexes, queries, pymongo's errors,
and the claims and leases of shared mode); the store logic is the core's (``jobshelf._store``).

- ``_store``: :class:`MongoDBJobStore`, the drop-in replacement for APScheduler 3's store;
- ``_leases``: shared mode's claims, leases and wake-ups.
"""

from __future__ import annotations

from ._store import FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD, MongoDBJobStore

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD", "MongoDBJobStore"]
