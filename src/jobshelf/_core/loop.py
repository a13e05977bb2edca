"""The scheduler loop, known by construction.

APScheduler 3 calls a job store from two kinds of places: its own loop (``_process_jobs``: due
jobs, then ``update_job``/``remove_job`` for each, then ``get_next_run_time``), where an exception
from ``update_job``/``remove_job``/``get_next_run_time`` kills the scheduler's thread; and the
application's calls (``add_job``, ``modify_job``, ``remove_job``...), which must raise as the
contract says.

:func:`enter_loop_pass` wraps the scheduler's own entry into its loop when a store starts, so the
context is set for exactly the duration of one pass and reset in a ``finally``, whatever the pass
raises, whichever thread or event loop runs it, and however a store subclass wraps its methods.
No stack inspection: a store asks :func:`in_loop_of` whether the current context is a pass of its
scheduler.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from typing import Any

__all__ = ["in_loop_of", "install_loop_context"]

#: The scheduler whose loop pass the current thread (or task) is in, if any.
_current_pass: contextvars.ContextVar[Any] = contextvars.ContextVar("jobshelf_loop_pass", default=None)
_MARK = "__jobshelf_loop_context__"
_install_lock = threading.Lock()


def install_loop_context(scheduler: Any) -> None:
    """Wrap ``scheduler``'s loop pass so stores can tell its calls from the application's.

    Idempotent: every jobshelf store of a scheduler shares one wrapper. The wrapper is an instance
    attribute; the scheduler's class is not changed.
    """
    with _install_lock:
        process = getattr(scheduler, "_process_jobs", None)
        if process is None or getattr(process, _MARK, False):
            return

        @functools.wraps(process)
        def loop_pass(*args: Any, **kwargs: Any) -> Any:
            token = _current_pass.set(scheduler)
            try:
                return process(*args, **kwargs)
            finally:
                _current_pass.reset(token)

        setattr(loop_pass, _MARK, True)
        scheduler._process_jobs = loop_pass


def in_loop_of(scheduler: Any) -> bool:
    """True while the current thread (or task) runs a loop pass of ``scheduler``."""
    return scheduler is not None and _current_pass.get() is scheduler
