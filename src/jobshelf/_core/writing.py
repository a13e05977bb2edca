"""Jobs to records, the one write-error policy, and the outbox kept through an outage.

The policy (applied in one place, ``StoreCore._write``):

- outside APScheduler's loop (the application's own calls) every error raises, as APScheduler's
  contract says: nothing is kept in memory, so an application never believes a change is stored
  when it is not;
- inside the loop nothing raises (an exception there kills the scheduler's thread): a write that
  fails because the database cannot be reached is kept in the outbox and written, in order,
  before the next read; any other failure is logged with what was not written.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.util import datetime_to_utc_timestamp

from .._exceptions import SerializationError
from .._serializer import dump_state
from .formats import Format
from .rows import WriteRecord

__all__ = ["Outbox", "encode_state", "log_unwritten"]

_revisions = random.Random()


def encode_state(state: dict[str, Any], target: Format, max_state_bytes: int) -> WriteRecord:
    """Encode a checked job state for writing in ``target``.

    :raises SerializationError: naming the job, when it cannot be encoded or is too large
    """
    job_id = state["id"]
    try:
        data = dump_state(target.serializer, state)
    except SerializationError as exc:
        raise SerializationError(f"job {job_id!r} cannot be stored: {exc}") from exc
    if len(data) > max_state_bytes:
        raise SerializationError(
            f"job {job_id!r} is {len(data)} bytes encoded in {target.name}, more than "
            f"max_state_bytes={max_state_bytes}; nothing was written. Pass smaller arguments "
            "(an id to look the data up), or raise max_state_bytes"
        )
    return WriteRecord(
        job_id,
        datetime_to_utc_timestamp(state["next_run_time"]),
        data.decode("utf-8") if target.text else data,
        target.name,
        _revisions.getrandbits(63),
    )


def log_unwritten(logger: logging.Logger, job_id: Any, what: str, exc: BaseException) -> None:
    """A write nobody can be told about (inside the loop, or kept through an outage) failed for
    good: say what was not written, and why."""
    logger.error(
        'The %s of job "%s" could not be written (%s: %s); it is not retried: the job fires again '
        "as its stored next run time says",
        what, job_id, type(exc).__name__, exc, exc_info=exc,
    )  # fmt: skip


class Outbox:
    """Writes of the scheduler's loop kept in memory while the database cannot be reached.

    Only the loop's writes are kept (the application's raise). They are written in order before
    the next read or write; a write the database then refuses for good is logged and dropped, so
    later reads do not fail forever. Kept writes are lost if the process dies during the outage.
    """

    def __init__(self, logger: logging.Logger, where: Callable[[], str]) -> None:
        self._logger = logger
        self._where = where
        self._pending: dict[Any, WriteRecord | None] = {}  # None: a removal
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def keep(self, job_id: Any, record: WriteRecord | None, exc: BaseException) -> None:
        """Keep the update (``record``) or removal (``None``) of a job, replacing an earlier one."""
        with self._lock:
            self._pending.pop(job_id, None)
            self._pending[job_id] = record
            count = len(self._pending)
        self._logger.warning(
            '%s cannot be reached (%s): the %s of job "%s" is kept in memory and written when it is '
            "back (%d write%s waiting)",
            self._where(), exc, "removal" if record is None else "update", job_id, count,
            "" if count == 1 else "s",
        )  # fmt: skip

    def discard(self) -> None:
        """Forget every kept write (``remove_all_jobs``)."""
        with self._lock:
            self._pending.clear()

    def flush(self, store: Any, transient: tuple[type[BaseException], ...]) -> None:
        """Write what is kept through ``store``'s ``_replace``/``_delete``.

        :raises: the transient error, when the database is still unreachable (kept for later)
        """
        if not self._pending:
            return
        with self._lock:
            while self._pending:
                job_id, record = next(iter(self._pending.items()))
                try:
                    if record is None:
                        store._delete(job_id)
                    elif not store._replace(record):
                        self._logger.info('Job "%s" was removed during the outage; update dropped', job_id)
                except transient:
                    raise
                except Exception as exc:  # refused for good: keeping it would fail every read
                    log_unwritten(self._logger, job_id, "update" if record else "removal", exc)
                del self._pending[job_id]
        self._logger.warning("%s is back: the writes kept during the outage are written", self._where())
