"""Stored jobs as operators see them: rows for ``list``, details for ``inspect``.

Nothing here runs code from the data. Formats that decode without running code are decoded; pickle
is read by the restricted unpickler in its looking-only mode (classes that are not part of a job
state are shown as ``<unresolved ...>`` stand-ins, never imported); anything else is not decoded.
"""

from __future__ import annotations

import datetime as dt
import pickletools
from collections.abc import Mapping
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from .._rows import StoredJob
from .._serializer import decoding_runs_code, is_pickle_family
from .._store import UNTAGGED_FORMAT
from ..mongodb import MongoDBJobStore
from ..serializers._restricted import restricted_loads
from ..serializers.signed import SignedSerializer

__all__ = ["JobView", "disassemble", "job_view", "view_state"]


def _nothing_allowed(module: str, name: str) -> bool:
    return False


class JobView:
    """One stored job, decoded as far as it safely can be."""

    def __init__(self, stored: StoredJob, state: Mapping[str, Any] | None, note: str) -> None:
        self.stored = stored
        self.state = state
        self.note = note  # how it was decoded, or why not

    @property
    def format(self) -> str:
        fmt = self.stored.format
        return UNTAGGED_FORMAT if fmt is None else fmt if isinstance(fmt, str) else repr(fmt)

    @property
    def status(self) -> str:
        if self.stored.quarantine is not None:
            return "quarantined"
        return "paused" if self.stored.next_run_time is None else "scheduled"

    @property
    def size(self) -> int:
        data = self.stored.data
        return len(data) if isinstance(data, (bytes, str)) else 0

    def next_run_time(self, zone: dt.tzinfo) -> dt.datetime | None:
        timestamp = self.stored.next_run_time
        if self.stored.quarantine is not None:
            timestamp = self.stored.quarantine.get("next_run_time")
        if not isinstance(timestamp, (int, float)):
            return None
        return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).astimezone(zone)

    def field(self, key: str) -> str:
        if self.state is None:
            return ""
        value = self.state.get(key)
        if key == "trigger" and isinstance(value, BaseTrigger):
            return str(value)
        if key == "func" and callable(value):
            return f"<by value: {getattr(value, '__qualname__', type(value).__name__)}>"
        return value if isinstance(value, str) else repr(value)

    def as_json(self, zone: dt.tzinfo) -> dict[str, Any]:
        when = self.next_run_time(zone)
        record = self.stored.quarantine or {}
        return {
            "id": self.stored.id if isinstance(self.stored.id, (str, int, float)) else repr(self.stored.id),
            "name": self.field("name") or None,
            "callable": self.field("func") or None,
            "trigger": self.field("trigger") or None,
            "next_run_time": when.isoformat() if when else None,
            "format": self.format,
            "size": self.size,
            "state": self.status,
            "decoded": self.state is not None,
            "note": self.note or None,
            "quarantine_reason": record.get("message"),
        }


def view_state(store: MongoDBJobStore, stored: StoredJob) -> tuple[dict[str, Any] | None, str]:
    """The decoded state (or ``None``) and a note: decoded without running any code."""
    fmt = UNTAGGED_FORMAT if stored.format is None else stored.format
    if not isinstance(fmt, str):
        return None, f"malformed format tag {fmt!r}"
    inner = store.serializer_for(fmt)
    data = stored.data.encode("utf-8") if isinstance(stored.data, str) else stored.data
    if not isinstance(data, bytes):
        return None, "no encoded state"
    if inner is None:
        return None, f"format {fmt!r} is not readable here"
    try:
        if not decoding_runs_code(inner):
            return store.decode_stored(stored), ""
        if isinstance(inner, SignedSerializer):
            _, data = inner.verified_payload(data)
            inner = inner.inner
        if is_pickle_family(inner):
            state = restricted_loads(data, _nothing_allowed, lenient=True)
            if not isinstance(state, dict):
                return None, f"pickle holds {type(state).__name__}, not a job state"
            return state, "read without running code (classes outside a job state shown unresolved)"
    except Exception as exc:
        return None, f"not decoded: {exc}"
    return None, f"not decoded: format {fmt!r} may run code when decoded (inspect --unsafe-run-code)"


def job_view(store: MongoDBJobStore, stored: StoredJob) -> JobView:
    state, note = view_state(store, stored)
    return JobView(stored, state, note)


def disassemble(data: bytes) -> str:
    """pickletools' listing of a pickle's opcodes: what it would import and call, not run."""
    import io

    out = io.StringIO()
    try:
        pickletools.dis(data, out, annotate=0)
    except Exception as exc:
        out.write(f"\n(stopped: {type(exc).__name__}: {exc})\n")
    return out.getvalue()
