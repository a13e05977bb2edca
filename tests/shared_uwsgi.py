"""A WSGI app that runs a shared scheduler under uWSGI (tests/processes/test_shared_servers.py), in the two
ways the README gives. Its configuration comes from the environment: ``JOBSHELF_TEST_URI`` and
``JOBSHELF_TEST_DB``.

The store and the scheduler are built at import (tests/shared_asgi.py's ``build_scheduler()``).

- With ``--lazy-apps`` each worker imports the app after the fork: the scheduler starts at import.
- Without it the app is imported once, in the master, and the workers are forked from it: the
  scheduler starts in each worker, in a ``@uwsgidecorators.postfork`` function (uWSGI runs it in
  every worker it forks, respawned ones included).

Either way ``uwsgi.atexit`` shuts the scheduler down: uWSGI calls it in a worker that exits on a
graceful reload (SIGHUP), a brutal one (SIGTERM) or a shutdown (SIGINT), when no request is going
on in it (and in the master, where nothing runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import uwsgi  # type: ignore[import-untyped]  # only inside uWSGI
import uwsgidecorators  # type: ignore[import-untyped]

from .shared_asgi import build_scheduler, stop

scheduler = build_scheduler()
uwsgi.atexit = lambda: stop(scheduler)

if uwsgi.opt.get("lazy-apps"):  # imported in the worker
    scheduler.start()
else:  # imported in the master, before the fork

    @uwsgidecorators.postfork  # type: ignore[untyped-decorator]
    def start() -> None:
        scheduler.start()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
