"""Execution records from APScheduler's job events, written in batches by a thread of their own.

Never in the scheduler's way:

- the listener only builds a small record and appends it to a bounded queue (the submission
  event arrives on the loop's thread, the others on the executor's); nothing waits for the
  database there, and an error in it is logged, never raised;
- a writer thread takes what waits, in batches, and writes it through the adapter's sink, once the
  loop pass that submitted those jobs is over (its submission events mark the end of the pass), so
  that the database does the history's work between the loop's passes rather than during them. While
  the database cannot be reached the records wait (retried with a growing pause, up to 5 s); past
  ``history_buffer`` waiting records the oldest are dropped, counted, and one warning says so;
  a batch the database refuses for another reason is logged and dropped (counted too).

A fire time's record is written once it is over: ``executed``, ``error`` or ``missed`` (its
execution event), or ``skipped`` (``max_instances`` were running). APScheduler dispatches the
submission event after its whole loop pass, so a quick job's execution event can come first:
both orders give the same record.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.util import datetime_to_utc_timestamp

if TYPE_CHECKING:
    from .history import HistorySink

__all__ = ["EVENTS", "LIMITS", "HistoryRecorder", "cap_text"]

#: The events a recorder listens to.
EVENTS = (
    EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
)
#: The most characters kept of each text field (ids, names and everything job code produces).
LIMITS = {"job_id": 1000, "type": 200, "message": 2000, "traceback": 8000, "host": 255, "instance": 300}
#: The most records written in one batch.
BATCH = 500
#: Seconds the writer waits after a first record for others to join its batch.
LINGER = 0.2
#: Seconds at most the writer then waits for the loop pass under way to end (it writes between
#: passes, so its database work does not delay the loop's own).
PASS_WAIT = 1.0
#: Seconds shutdown() waits for the last records to be written.
STOP_WAIT = 5.0
_OUTCOME = {EVENT_JOB_EXECUTED: "executed", EVENT_JOB_ERROR: "error", EVENT_JOB_MISSED: "missed"}
_UTC = dt.timezone.utc


def cap_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut (a traceback keeps
    its end, where the failing line is)."""
    if len(text) <= limit:
        return text
    marker = f"...[{len(text) - limit} characters cut]..."
    room = max(limit - len(marker), 0)
    return marker + text[len(text) - room :] if keep_end else text[:room] + marker


def _safe_str(value: Any) -> str:
    try:
        text = str(value)
    except Exception as exc:  # job code's __str__ may raise: the record says so instead
        return f"<str() failed: {type(exc).__name__}>"
    return text if type(text) is str else ""


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module == "builtins" else f"{module}.{name}"


def _when(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, _UTC)


class HistoryRecorder:
    """Listens to one store's job events and writes their records through ``sink``.

    :param sink: the adapter's sink
    :param buffer: the most records waiting to be written
    :param logger: the store's logger
    :param where: names the store in messages
    :param label: the store's own holder id, once it has one (a shared store's ``holder``); until
        then, and for other stores, records name the instance ``host:pid:random`` of their own
    """

    def __init__(
        self,
        sink: HistorySink,
        buffer: int,
        logger: logging.Logger,
        where: Callable[[], str],
        label: Callable[[], Any] | None = None,
    ) -> None:
        self.sink = sink
        self.buffer = buffer
        self.dropped = 0
        self._logger = logger
        self._where = where
        self._lock = threading.Condition()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        #: job id -> when the loop last picked it up (before submitting it)
        self._picked: collections.OrderedDict[Any, float] = collections.OrderedDict()
        #: (job id, fire time) -> when it was submitted, until its execution event comes
        self._running: collections.OrderedDict[tuple[Any, float], float] = collections.OrderedDict()
        #: (job id, fire time) whose execution event came before its submission event
        self._early: collections.OrderedDict[tuple[Any, float], None] = collections.OrderedDict()
        self._scheduler: Any = None
        self._alias = ""
        self._holder: dict[str, Any] = {}
        self._label = label  # asked until it gives a holder id
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failing = False  # the database could not be reached at the last try
        self._pass_open = False  # the loop picked jobs up and has not dispatched their submission yet
        self._drop_warned = False

    # ------------------------------------------------------------------------- life cycle

    def start(self, scheduler: Any, alias: str) -> None:
        """Listen to ``scheduler``'s events for the jobs of store ``alias``; start the writer."""
        host, pid = socket.gethostname(), os.getpid()  # here, not earlier: after any fork
        self._holder = {
            "host": cap_text(host, LIMITS["host"]),
            "pid": pid,
            "instance": cap_text(f"{host}:{pid}:{secrets.token_hex(4)}", LIMITS["instance"]),
        }
        self._scheduler, self._alias = scheduler, alias
        self._thread = threading.Thread(target=self._run, name=f"jobshelf-history-{alias}", daemon=True)
        self._thread.start()
        scheduler.add_listener(self.on_event, EVENTS)

    @property
    def instance(self) -> str:
        """This store instance's holder label, ``host:pid:random``."""
        return str(self._holder.get("instance", ""))

    def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop listening; write what waits for ``wait`` seconds at most, then give up on the rest
        (logged, counted)."""
        if self._scheduler is not None:
            with contextlib.suppress(Exception):  # removed already
                self._scheduler.remove_listener(self.on_event)
        thread = self._thread
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._lock.notify_all()
        if thread is not None:
            thread.join(wait)
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
        if left:
            self._logger.warning(
                "%s: %d execution record%s could not be written before shutdown (the database did not "
                "take them within %ss); they are lost",
                self._where(), left, "" if left == 1 else "s", wait,
            )  # fmt: skip

    # ------------------------------------------------------------------------- events (never raise)

    def picked(self, jobs: Sequence[Any]) -> None:
        """The loop read ``jobs`` as due now: they are submitted next."""
        now = time.time()
        with self._lock:
            if self._stopping:
                return
            self._pass_open = True
            for job in jobs:
                self._picked[job.id] = now
                self._picked.move_to_end(job.id)
            while len(self._picked) > self.buffer:
                self._picked.popitem(last=False)

    def on_event(self, event: Any) -> None:
        """APScheduler's listener: build the record of a fire time that is over, and queue it."""
        try:
            if getattr(event, "jobstore", None) != self._alias:
                return  # another store's job
            now = time.time()
            code = event.code
            if code == EVENT_JOB_SUBMITTED:
                self._submitted(event.job_id, event.scheduled_run_times, now)
            elif code == EVENT_JOB_MAX_INSTANCES:
                self._skipped(event.job_id, event.scheduled_run_times, now)
            elif code in _OUTCOME:
                self._finished(event, now)
        except Exception as exc:  # never into APScheduler: a lost record is logged
            self._logger.error("%s: an execution record could not be made (%s: %s)", self._where(),
                               type(exc).__name__, exc, exc_info=exc)  # fmt: skip

    def _submitted(self, job_id: Any, run_times: Sequence[dt.datetime], now: float) -> None:
        with self._lock:
            self._end_of_pass()
            submitted = self._picked.pop(job_id, now)
            for run_time in run_times:
                key = (job_id, datetime_to_utc_timestamp(run_time))
                if key in self._early:  # its run is over and recorded already
                    del self._early[key]
                    continue
                self._running[key] = submitted
            while len(self._running) > self.buffer:
                self._running.popitem(last=False)

    def _skipped(self, job_id: Any, run_times: Sequence[dt.datetime], now: float) -> None:
        with self._lock:
            self._end_of_pass()
            submitted = self._picked.pop(job_id, now)
        for run_time in run_times:
            self._queue_record(self._record(job_id, run_time, "skipped", submitted, now))

    def _end_of_pass(self) -> None:
        """A submission event (lock held): APScheduler dispatches them at the end of its pass."""
        if self._pass_open:
            self._pass_open = False
            self._lock.notify_all()

    def _finished(self, event: Any, now: float) -> None:
        job_id, run_time = event.job_id, event.scheduled_run_time
        key = (job_id, datetime_to_utc_timestamp(run_time))
        with self._lock:
            submitted = self._running.pop(key, None)
            if submitted is None:  # its submission event comes after this pass of the loop
                submitted = self._picked.get(job_id, now)
                self._early[key] = None
                while len(self._early) > self.buffer:
                    self._early.popitem(last=False)
        outcome = _OUTCOME[event.code]
        record = self._record(job_id, run_time, outcome, submitted, now)
        if outcome == "error":
            exception = event.exception
            record["error"] = {
                "type": cap_text(_error_type(exception), LIMITS["type"]),
                "message": cap_text(_safe_str(exception), LIMITS["message"]),
                "traceback": cap_text(_safe_str(event.traceback or ""), LIMITS["traceback"], keep_end=True),
            }
        self._queue_record(record)

    def _record(
        self, job_id: Any, run_time: dt.datetime, outcome: str, submitted: float, now: float
    ) -> dict[str, Any]:
        if self._label is not None:
            label = self._label()
            if type(label) is str and label:  # the shared store has started: its leases' name
                self._holder = {**self._holder, "instance": cap_text(label, LIMITS["instance"])}
                self._label = None
        submitted = min(submitted, now)
        return {
            "_id": uuid.uuid4().hex,
            "job_id": cap_text(_safe_str(job_id), LIMITS["job_id"]),
            "scheduled_run_time": datetime_to_utc_timestamp(run_time),
            "submitted_at": _when(submitted),
            "finished_at": _when(now),
            "duration": now - submitted if outcome in ("executed", "error") else None,
            "outcome": outcome,
            "error": None,
            "holder": self._holder,
        }

    def _queue_record(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._stopping:
                self.dropped += 1
                return
            self._queue.append(record)
            warn = self._trim()
            self._lock.notify_all()
        if warn:
            self._warn_dropping()

    def _trim(self) -> bool:
        """Drop the oldest waiting records past the bound (lock held); whether to warn now."""
        excess = len(self._queue) - self.buffer
        if excess <= 0:
            return False
        for _ in range(excess):
            self._queue.popleft()
        self.dropped += excess
        warn, self._drop_warned = not self._drop_warned, True
        return warn

    def _warn_dropping(self) -> None:
        self._logger.warning(
            "%s: more than history_buffer=%d execution records wait to be written; the oldest are "
            "dropped from now on (store.history_dropped counts them)",
            self._where(), self.buffer,
        )  # fmt: skip

    # ------------------------------------------------------------------------- the writer thread

    def _run(self) -> None:
        pause = 0.5
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    return  # stopping, nothing left
                if not self._stopping and not self._failing and len(self._queue) < BATCH:
                    self._lock.wait_for(lambda: len(self._queue) >= BATCH or self._stopping, LINGER)
                    self._lock.wait_for(
                        lambda: not self._pass_open or len(self._queue) >= BATCH or self._stopping, PASS_WAIT
                    )
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            if self._write(batch):
                pause = 0.5
                continue
            with self._lock:
                if self._stopping:
                    self.dropped += len(batch)
                    return
                self._queue.extendleft(reversed(batch))  # they wait, oldest first
                warn = self._trim()
                self._lock.wait_for(lambda: self._stopping, pause)
            if warn:
                self._warn_dropping()
            pause = min(pause * 2, 5.0)

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        """Write one batch; ``False`` when the database cannot be reached (the batch waits)."""
        try:
            self.sink.write(batch)
        except self.sink.transient_errors as exc:
            if not self._failing:
                self._failing = True
                self._logger.warning(
                    "%s cannot be reached (%s): execution records wait in memory (up to "
                    "history_buffer=%d) and are written when it is back",
                    self._where(), exc, self.buffer,
                )  # fmt: skip
            return False
        except Exception as exc:
            with self._lock:
                self.dropped += len(batch)
            self._logger.error(
                "%s: %d execution record%s refused by the database (%s: %s); they are dropped",
                self._where(), len(batch), "" if len(batch) == 1 else "s", type(exc).__name__, exc,
                exc_info=exc,
            )  # fmt: skip
            return True
        if self._failing:
            self._failing = False
            self._drop_warned = False
            self._logger.warning(
                "%s is back: the execution records kept meanwhile are written (%d dropped in all so far)",
                self._where(), self.dropped,
            )  # fmt: skip
        return True
