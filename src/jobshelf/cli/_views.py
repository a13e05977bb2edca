"""Stored jobs as operators see them: rows for ``list``, details for ``inspect``.

Nothing here runs code from the data, and no allow-list is needed to look. Formats that decode
without running code (msgpack, JSON) are decoded; pickle is read by the store's restricted
unpickler in its looking-only mode (classes that are not part of a job state are shown as
``<unresolved ...>`` stand-ins, never imported); anything else is not decoded.
"""

from __future__ import annotations

import datetime as dt
import io
import pickletools
from collections.abc import Mapping
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from .._core.rows import StoredJob
from .._serializer import decoding_runs_code, is_pickle_family, load_state
from ..mongodb import MongoDBJobStore
from ..serializers._restricted import restricted_loads
from ..serializers.signed import SignedSerializer
from ._connection import tag_label

__all__ = ["JobView", "disassemble", "job_view", "shown", "view_state"]


def _nothing_allowed(module: str, name: str) -> bool:
    return False


class JobView:
    """One stored job, decoded as far as it safely can be (``state`` is ``None`` when not)."""

    def __init__(self, stored: StoredJob, state: Mapping[str, Any] | None = None, note: str = "") -> None:
        self.stored = stored
        self.state = state
        self.note = note  # how it was decoded, or why not

    @property
    def format(self) -> str:
        return tag_label(self.stored.format)

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
        if type(timestamp) not in (int, float):
            return None
        try:
            return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).astimezone(zone)
        except (OverflowError, OSError, ValueError):  # outside the calendar, or not a number
            return None

    def field(self, key: str) -> str:
        if self.state is None:
            return ""
        value = self.state.get(key)
        if key == "trigger" and isinstance(value, BaseTrigger):
            return _str(value)
        if key == "func" and callable(value):
            return f"<by value: {getattr(value, '__qualname__', type(value).__name__)}>"
        return value if isinstance(value, str) else _repr(value)

    def as_json(self, zone: dt.tzinfo) -> dict[str, Any]:
        when = self.next_run_time(zone)
        record = self.stored.quarantine or {}
        job_id = self.stored.id
        reason = record.get("message")
        return {
            "id": job_id if type(job_id) in (str, int, float) else repr(job_id),
            "name": self.field("name") or None,
            "callable": self.field("func") or None,
            "trigger": self.field("trigger") or None,
            "next_run_time": when.isoformat() if when else None,
            "format": self.format,
            "size": self.size,
            "state": self.status,
            "decoded": self.state is not None,
            "note": self.note or None,
            "quarantine_reason": reason if reason is None or isinstance(reason, str) else repr(reason),
        }


def view_state(
    store: MongoDBJobStore, stored: StoredJob, unreadable: Mapping[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The decoded state (or ``None``) and a note: decoded without running any code.

    ``unreadable`` says why a format cannot be read by this command (no keys, not registered).
    """
    if stored.format is not None and type(stored.format) is not str:
        return None, f"a malformed format tag ({type(stored.format).__name__}, not a string): never read"
    label = tag_label(stored.format)
    why = unreadable.get(label)
    inner = store.serializer_for(stored.format) if store.accepts(stored.format) else None
    if inner is None:
        return None, f"format {label!r} is not readable here: {why or 'not accepted'}"
    data = stored.data.encode("utf-8") if type(stored.data) is str else stored.data
    if not isinstance(data, bytes):
        return None, "no encoded state"
    if len(data) > store.max_state_bytes:
        return None, f"not decoded: {len(data):,} bytes, more than max_state_bytes={store.max_state_bytes:,}"
    try:
        if not decoding_runs_code(inner):
            return load_state(inner, bytes(data)), ""
        if isinstance(inner, SignedSerializer):
            _, data = inner.verified_payload(bytes(data))
            inner = inner.inner
        if is_pickle_family(inner):
            state = restricted_loads(bytes(data), _nothing_allowed, lenient=True)
            if not isinstance(state, dict):
                return None, f"pickle holds {type(state).__name__}, not a job state"
            return state, "read without running code (classes outside a job state shown unresolved)"
    except Exception as exc:
        return None, f"not decoded: {exc}"
    return None, f"not decoded: format {label!r} may run code when decoded (inspect --unsafe-run-code)"


def job_view(store: MongoDBJobStore, stored: StoredJob, unreadable: Mapping[str, str]) -> JobView:
    """A :class:`JobView` with the state decoded as far as it safely can be."""
    state, note = view_state(store, stored, unreadable)
    return JobView(stored, state, note)


def shown(key: str, value: Any) -> str:
    """A state value as ``inspect`` shows it: a trigger as APScheduler describes it, else its repr."""
    return _str(value) if key == "trigger" else _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a stand-in or a value whose repr fails: say so, do not stop
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


def disassemble(data: bytes) -> list[str]:
    """pickletools' listing of a pickle's opcodes, line by line: what it would import and call."""
    out = io.StringIO()
    try:
        pickletools.dis(data, out, annotate=0)
    except Exception as exc:
        out.write(f"\n(stopped: {type(exc).__name__}: {exc})\n")
    return out.getvalue().splitlines()
