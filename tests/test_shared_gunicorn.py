"""Shared mode under gunicorn itself (issue 16): a Flask-style app whose scheduler and store are
built at import in the master (``--preload``) and started in each worker's ``post_fork``, every
worker registering the same jobs; a graceful reload (HUP) and a SIGKILLed worker on the way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
from pymongo import ASCENDING, MongoClient

from jobshelf import MongoDBJobStore

from .helpers import wait_for

pytestmark = pytest.mark.subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live_holders(store: MongoDBJobStore) -> list[Any]:
    return [record for record in store.holders() if record.alive]


def test_gunicorn_preload_workers_run_each_fire_time_through_a_reload_and_a_kill(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    pytest.importorskip("gunicorn")
    db = mongo_client[database]
    db.executions.create_index([("job", ASCENDING), ("run_time", ASCENDING)], unique=True)
    observer = MongoDBJobStore(database=database, client=mongo_client, shared=True)  # reads the records
    env = {**os.environ, "JOBSHELF_TEST_URI": mongodb_uri, "JOBSHELF_TEST_DB": database}
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-b", f"127.0.0.1:{free_port()}",
               "-c", "tests/shared_gunicorn_conf.py", "--graceful-timeout", "10",
               "tests.shared_wsgi:app"]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        master = subprocess.Popen(command, env=env, stdout=log, stderr=log, text=True)
        try:
            assert wait_for(lambda: len(live_holders(observer)) == 3, timeout=30), observer.holders()
            first = {d["_id"]: d["next_run_time"] for d in db.jobs.find({}, ["next_run_time"])}
            assert sorted(first) == [f"reg{index:02}" for index in range(5)]
            began = time.time()
            time.sleep(3)

            master.send_signal(signal.SIGHUP)  # a graceful reload: new workers, the old ones shut down
            old = {record.holder for record in live_holders(observer)}
            assert wait_for(lambda: len({r.holder for r in live_holders(observer)} - old) == 3, timeout=30)
            time.sleep(2)

            victim = live_holders(observer)[0]
            held = [(d["_id"], d["lease"].get("pending", d["next_run_time"]))
                    for d in db.jobs.find({"lease.holder": victim.holder})]  # fmt: skip
            os.kill(victim.pid, signal.SIGKILL)  # gunicorn starts another worker
            time.sleep(5)
            stopping = time.time() - 2
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(60)
            log.seek(0)
            output = log.read()
    assert master.returncode == 0, output[-3000:]
    assert "Error submitting job" not in output and "Traceback" not in output, output[-3000:]

    executions = list(db.executions.find())
    done = {(e["job"], round(e["run_time"], 3)) for e in executions}
    for job_id, first_time in first.items():  # the first registration's schedule stands; every fire time ran
        assert all(abs((e["run_time"] - first_time) - round(e["run_time"] - first_time)) < 1e-3
                   for e in executions if e["job"] == job_id)  # fmt: skip
        fire_time = first_time
        while fire_time < stopping:
            if fire_time > began:
                assert (job_id, round(fire_time, 3)) in done, (job_id, fire_time - began)
            fire_time += 1
    duplicates = {(d["job"], d["run_time"]) for d in db.duplicates.find()}
    assert duplicates <= set(held)  # only runs the killed worker had in flight ran twice
