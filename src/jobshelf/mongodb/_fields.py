"""The fields of a job document (the stock store's three, and jobshelf's)."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMAT_FIELD", "QUARANTINE_FIELD", "REVISION_FIELD", "is_integer"]

#: Document field naming the format that wrote ``job_state`` (absent: stock pickle).
FORMAT_FIELD = "job_state_format"
#: Document field set on every jobshelf write: a random token that conditional updates compare.
REVISION_FIELD = "job_state_rev"
#: Document field set on a job that could not be decoded: why, when, and its next run time.
QUARANTINE_FIELD = "quarantine"


def is_integer(value: Any) -> bool:
    """An integer as pymongo reads one (``int`` or ``bson.Int64``), not a ``bool``: how a stored
    revision, token, pid or count is recognised."""
    return isinstance(value, int) and not isinstance(value, bool)
