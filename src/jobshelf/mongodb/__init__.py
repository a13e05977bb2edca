"""The MongoDB adapter: it speaks MongoDB only (documents, indexes, queries, pymongo's errors, and
the claims, leases, liveness and wake-ups of shared mode); the store logic is the core's
(``jobshelf._core``).

- ``_store``: :class:`MongoDBJobStore`, the drop-in replacement for APScheduler 3's store;
- ``_fields``: the document's field names;
- ``_history``: execution records in a sibling collection (opt-in);
- shared mode, composed in ``_shared``: ``_leases`` (lease values and the runs an instance holds),
  ``_claims`` (claims, releases, renewals), ``_liveness`` (check-ins, dead holders, the upkeep
  thread), ``_wakeups`` (change streams or re-checks), ``_registration`` (registering an unchanged
  job again), ``_forking`` (stores used across ``os.fork()``).
"""

from __future__ import annotations

from ._fields import FORMAT_FIELD, QUARANTINE_FIELD, REVISION_FIELD
from ._liveness import HolderRecord
from ._store import MongoDBJobStore

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD", "HolderRecord", "MongoDBJobStore"]
