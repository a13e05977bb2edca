"""Shared mode under uvicorn and uWSGI themselves, as the README's "Forking servers" runs them
(gunicorn: tests/processes/test_shared_gunicorn.py). Every worker registers the same jobs and runs a
scheduler; a SIGKILLed worker on the way (the server starts another), and for uWSGI a graceful
reload (HUP); every fire time runs, and only the killed worker's runs in flight may run twice.

- uvicorn ``--workers 2`` spawns fresh worker processes: the app (tests/shared_asgi.py) builds
  and starts its scheduler in the lifespan startup and shuts it down in the lifespan shutdown.
- uWSGI (tests/shared_uwsgi.py), with ``--lazy-apps``: each worker imports the app and starts the
  scheduler at import; without it: the master imports the app (store and scheduler built there),
  the workers are forked from it and start the scheduler in a ``@uwsgidecorators.postfork``
  function. That needs ``--py-call-uwsgi-fork-hooks``: the store's MongoClient has threads in the
  master, and without the hooks uWSGI forks without taking the GIL, so a worker forked while one
  of them held it waits for the GIL forever. ``uwsgi.atexit`` shuts the scheduler down.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from jobshelf import MongoDBJobStore

from ..helpers import (
    ROOT,
    Run,
    assert_each_fire_time_ran,
    free_port,
    kill_holder,
    live_holders,
    prepare_records,
    registered_schedule,
    running_server,
    server_env,
    wait_for,
)

pytestmark = pytest.mark.subprocess

UWSGI = Path(sys.executable).parent / "uwsgi"


def live_ids(observer: MongoDBJobStore) -> set[str]:
    return {record.holder for record in live_holders(observer)}


def kill_a_worker(db: Database[Any], observer: MongoDBJobStore, workers: int) -> tuple[Any, set[Run]]:
    """SIGKILL one worker, then wait until the server has ``workers`` live ones again, none of them
    the killed one: the worker and the runs it had in flight."""
    victim = live_holders(observer)[0]
    held = kill_holder(db, victim)
    replaced = wait_for(lambda: len(ids := live_ids(observer)) == workers and victim.holder not in ids, 30)
    assert replaced, observer.holders()
    return victim, held


def test_uvicorn_workers_run_each_fire_time_through_a_killed_worker(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    pytest.importorskip("uvicorn")
    db, observer = prepare_records(mongo_client, database)
    command = [sys.executable, "-m", "uvicorn", "--workers", "2", "--lifespan", "on", "--host", "127.0.0.1",
               "--port", str(free_port()), "tests.shared_asgi:app"]  # fmt: skip
    with running_server(command, server_env(mongodb_uri, database)) as server:
        assert wait_for(lambda: len(live_holders(observer)) == 2, timeout=30), observer.holders()
        first = registered_schedule(db)
        began = time.time()
        time.sleep(3)

        victim, held = kill_a_worker(db, observer, workers=2)  # uvicorn (0.30 and later) starts another
        time.sleep(3)
        stopping = time.time() - 2
    output = server.output
    assert server.process.returncode == 0, output[-3000:]
    assert f"Child process [{victim.pid}] died" in output, output[-3000:]
    assert "Traceback" not in output and "Error submitting job" not in output, output[-3000:]
    # the lifespan shutdown ran in every live worker: each deleted its liveness record
    assert {record.holder for record in observer.holders()} <= {victim.holder}, observer.holders()
    assert_each_fire_time_ran(db, first, began, stopping, may_repeat=held, output=output)


@pytest.mark.parametrize("mode", ["lazy-apps", "postfork"])
def test_uwsgi_workers_run_each_fire_time_through_a_reload_and_a_kill(
    mode: str, mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    if not UWSGI.exists():
        pytest.skip(f"no uwsgi beside {sys.executable} (pip install uwsgi)")
    db, observer = prepare_records(mongo_client, database)
    command = [str(UWSGI), "--master", "--processes", "3", "--enable-threads", "--die-on-term", "--need-app",
               "--http-socket", f"127.0.0.1:{free_port()}", "--virtualenv", sys.prefix,
               "--pythonpath", str(ROOT), "--module", "tests.shared_uwsgi:application"]  # fmt: skip
    command.append("--lazy-apps" if mode == "lazy-apps" else "--py-call-uwsgi-fork-hooks")
    with running_server(command, server_env(mongodb_uri, database), timeout=30) as server:  # then SIGTERM
        assert wait_for(lambda: len(live_holders(observer)) == 3, timeout=30), observer.holders()
        first = registered_schedule(db)
        began = time.time()
        time.sleep(3)

        old = live_ids(observer)
        server.process.send_signal(signal.SIGHUP)  # a graceful reload: the workers exit, the master re-execs
        assert wait_for(lambda: len(live_ids(observer) - old) == 3, timeout=30), observer.holders()
        # the old workers shut their schedulers down (uwsgi.atexit): their liveness records are gone
        assert old.isdisjoint(record.holder for record in observer.holders()), observer.holders()
        time.sleep(2)

        victim, held = kill_a_worker(db, observer, workers=3)  # uWSGI respawns it
        time.sleep(3)
        stopping = time.time() - 2
    output = server.output
    assert server.process.returncode == 0, output[-3000:]
    assert "binary reloading uWSGI" in output, output[-3000:]
    assert f"(pid: {victim.pid}) died, killed by signal 9" in output, output[-3000:]
    assert "Traceback" not in output and "Error submitting job" not in output, output[-3000:]
    assert {record.holder for record in observer.holders()} <= {victim.holder}, observer.holders()
    assert_each_fire_time_ran(db, first, began, stopping, may_repeat=held, output=output)
