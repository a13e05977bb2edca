"""Wake-ups: a sleeping scheduler is woken when another process makes a job due sooner than it
planned to wake (a job added, resumed or moved earlier), even if that process exits at once.

Where the server offers change streams, a change stream on the jobs collection does it; this
instance's own claims and write-backs are filtered out on the server (they set a lease naming it),
and the stream is read about once a second. Without change streams (a standalone mongod), the
earliest next run time is read every ``recheck`` seconds, and the scheduler is woken only if it is
earlier than planned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

from .._core.reading import as_timestamp
from ._leases import LEASE_FIELD

__all__ = ["WakeupWatcher"]

logger = logging.getLogger("jobshelf.shared")

#: The least time between two reads of the change stream (seconds): servers may answer a read
#: early, on changes the stream filters out.
_POLL = 1.0


class WakeupWatcher(threading.Thread):
    """Wakes the scheduler when another process makes a job due before its planned wake-up.

    :param collection: the jobs collection
    :param holder: this instance's holder id (its own changes are not watched)
    :param wakeup: the scheduler's ``wakeup``
    :param planned: when the scheduler plans to wake (UTC timestamp; ``inf``: not planned)
    :param earliest: the earliest next run time of a job (re-check mode)
    :param recheck: seconds between re-checks without change streams
    """

    def __init__(
        self,
        collection: Any,
        holder: str,
        *,
        wakeup: Callable[[], None],
        planned: Callable[[], float],
        earliest: Callable[[], float | None],
        recheck: float,
    ) -> None:
        super().__init__(name=f"jobshelf-wakeups-{collection.full_name}", daemon=True)
        self._collection = collection
        self._holder = holder
        self._wakeup_scheduler = wakeup
        self._planned = planned
        self._earliest = earliest
        self._recheck = recheck
        self._where = collection.full_name
        self._halt = threading.Event()
        self.mode = "starting"

    def stop(self) -> None:
        self._halt.set()

    def _wakeup(self) -> None:
        try:
            self._wakeup_scheduler()
        except Exception as exc:  # a scheduler not started (or shutting down) has nothing to wake
            logger.debug("%s: could not wake the scheduler: %s", self._where, exc)

    def run(self) -> None:
        stream = self._open_stream()
        while not self._halt.is_set():
            try:
                if stream is not None:
                    asked = time.monotonic()
                    change = stream.try_next()  # one getMore: waits up to max_await_time_ms
                    while change is not None:
                        self._consider(change)
                        # the rest of the batch already received, without another getMore
                        change = stream.try_next() if _buffered(stream) else None
                    self._halt.wait(max(0.0, _POLL - (time.monotonic() - asked)))
                else:
                    self._halt.wait(self._recheck)
                    earliest = self._earliest()
                    if earliest is not None and earliest < self._planned():
                        self._wakeup()
            except PyMongoError as exc:
                logger.warning("%s: watching for changes failed (%s); retrying", self._where, exc)
                if stream is not None:
                    stream.close()
                self._halt.wait(1)
                self._wakeup()  # a change may have been missed meanwhile
                stream = self._open_stream()
            except Exception:  # never die: schedulers would sleep through other processes' changes
                logger.exception("%s: watching for changes failed; retrying", self._where)
                self._halt.wait(1)
        if stream is not None:
            stream.close()

    def _open_stream(self) -> Any:
        pipeline = [{"$match": {
            "operationType": {"$in": ["insert", "update", "replace"]},
            f"updateDescription.updatedFields.{LEASE_FIELD}.holder": {"$ne": self._holder},
        }}]  # fmt: skip
        try:
            stream = self._collection.watch(pipeline, max_await_time_ms=1000)
        except PyMongoError as exc:
            if self.mode != "re-check":
                logger.info("%s: change streams are not available (%s); re-checking every %ss instead",
                            self._where, exc, self._recheck)  # fmt: skip
            self.mode = "re-check"
            return None
        if self.mode != "change stream":
            logger.info("%s: waking schedulers with a change stream", self._where)
        self.mode = "change stream"
        return stream

    def _consider(self, change: Any) -> bool:
        """Wake the scheduler if the change makes a job due before the planned wake-up."""
        if not isinstance(change, dict):
            return False
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("change: %s %s", change.get("operationType"), change.get("updateDescription"))
        description = change.get("updateDescription")
        fields = description.get("updatedFields") if isinstance(description, dict) else None
        if not isinstance(fields, dict):
            fields = change.get("fullDocument")
        if not isinstance(fields, dict):
            return False
        lease = fields.get(LEASE_FIELD)
        if isinstance(lease, dict) and lease.get("holder") == self._holder:
            return False  # this instance's own write (servers that do not filter the stream)
        next_run_time = as_timestamp(fields.get("next_run_time"))
        if next_run_time is not None and next_run_time < self._planned():
            self._wakeup()
            return True
        return False


def _buffered(stream: Any) -> int:
    """Changes the stream has received and not yet returned (pymongo keeps them in its cursor's
    buffer; 0 if that cannot be read, and the rest waits for the next poll)."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0
