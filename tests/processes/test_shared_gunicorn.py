"""Shared mode under gunicorn itself (issue 16): a Flask-style app whose scheduler and store are
built at import in the master (``--preload``) and started in each worker's ``post_fork``, every
worker registering the same jobs; a graceful reload (HUP) and a SIGKILLed worker on the way.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import pytest
from pymongo import MongoClient

from ..helpers import (
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


def test_gunicorn_preload_workers_run_each_fire_time_through_a_reload_and_a_kill(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    pytest.importorskip("gunicorn")
    db, observer = prepare_records(mongo_client, database)  # the observer reads the records
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-b", f"127.0.0.1:{free_port()}",
               "-c", "tests/shared_gunicorn_conf.py", "--graceful-timeout", "10",
               "tests.shared_wsgi:app"]  # fmt: skip
    with running_server(command, server_env(mongodb_uri, database)) as server:
        assert wait_for(lambda: len(live_holders(observer)) == 3, timeout=30), observer.holders()
        first = registered_schedule(db)
        began = time.time()
        time.sleep(3)

        server.process.send_signal(signal.SIGHUP)  # a graceful reload: new workers, the old ones shut down
        old = {record.holder for record in live_holders(observer)}
        assert wait_for(lambda: len({r.holder for r in live_holders(observer)} - old) == 3, timeout=30)
        time.sleep(2)

        victim = live_holders(observer)[0]
        held = kill_holder(db, victim)  # gunicorn starts another worker
        time.sleep(5)
        stopping = time.time() - 2
    output = server.output
    assert server.process.returncode == 0, output[-3000:]
    assert "Error submitting job" not in output and "Traceback" not in output, output[-3000:]
    # the first registration's schedule stands; every fire time ran; only runs the killed worker
    # had in flight ran twice
    assert_each_fire_time_ran(db, first, began, stopping, may_repeat=held, output=output)
