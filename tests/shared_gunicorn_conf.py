"""gunicorn settings for the gunicorn test: start the scheduler in each worker after the fork, shut
it down when the worker exits (tests/shared_wsgi.py)."""

from __future__ import annotations

from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    from tests import shared_wsgi

    shared_wsgi.start()


def worker_exit(server: Any, worker: Any) -> None:
    from tests import shared_wsgi

    shared_wsgi.stop()
