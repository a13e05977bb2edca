"""A WSGI app that runs a shared scheduler, the way a web app under gunicorn does (the gunicorn
test). Its configuration comes from the environment: ``JOBSHELF_TEST_URI`` and
``JOBSHELF_TEST_DB``.

At import (in gunicorn's master, with ``--preload``) it builds the store and the scheduler and
registers five jobs with fixed ids (tests/shared_asgi.py's ``build_scheduler()``, which also
records the runs); ``start()`` starts the scheduler (gunicorn's ``post_fork``, in each worker)
and ``stop()`` shuts it down (``worker_exit``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import shared_asgi

scheduler = shared_asgi.build_scheduler()  # built before the fork


def start() -> None:
    scheduler.start()


def stop() -> None:
    shared_asgi.stop(scheduler)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
