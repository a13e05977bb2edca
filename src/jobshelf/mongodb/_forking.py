"""Stores used across ``os.fork()`` (gunicorn ``--preload``, uWSGI without ``lazy-apps``,
``multiprocessing`` with the fork start method).

Threads do not survive a fork and anything computed per process must be computed after it. A
shared store therefore takes its holder id at ``start()``, in the process that runs the scheduler,
and in a forked child everything it knew of its parent's claims and threads is forgotten (an
``os.register_at_fork`` hook). A MongoClient created before the fork is noticed at ``start()``:
one the store created itself is replaced by a new one; one passed in is used (pymongo resets its
connections in the child) with a warning that says how to create it after the fork.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Protocol

__all__ = ["ForkAware", "forked_since", "register"]


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_stores: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_hooked = False


def register(store: ForkAware) -> None:
    """Call ``store._after_fork_in_child()`` in every child forked from now on."""
    global _hooked  # noqa: PLW0603 - one process-wide hook
    with _lock:
        _stores.add(store)
        if not _hooked and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
            _hooked = True


def _after_fork() -> None:
    for store in list(_stores):
        store._after_fork_in_child()


def forked_since(pid: int) -> bool:
    """True when this process is not ``pid`` (it was forked since ``pid`` recorded something)."""
    return os.getpid() != pid
