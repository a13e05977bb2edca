"""The fields of a job document (the stock store's three, and jobshelf's)."""

from __future__ import annotations

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD"]

#: Document field naming the format that wrote ``job_state`` (absent: stock pickle).
FORMAT_FIELD = "job_state_format"
#: Document field set on every jobshelf write: a random token that conditional updates compare.
REVISION_FIELD = "job_state_rev"
#: Document field set on a job that could not be decoded: why, when, and its next run time.
QUARANTINE_FIELD = "quarantine"
