"""cloudpickle: callables without a textual reference survive a restart in a fresh process."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from jobshelf import CloudPickleSerializer, MongoDBJobStore, SerializationError

from .helpers import dummy_job, make_job

KINDS = ("lambda", "closure", "partial", "nested", "main")

WRITER = textwrap.dedent(
    """
    import datetime as dt, functools, sys
    from pathlib import Path
    from apscheduler.schedulers.background import BackgroundScheduler
    from jobshelf import MongoDBJobStore

    uri, database, outdir = sys.argv[1:4]

    def write_marker(name, text):  # defined in __main__: only resolvable inside this script
        Path(outdir, name).write_text(text)

    def make_closure(tag):
        def closure(name):
            write_marker(name, tag)
        return closure

    def make_nested():
        def nested(name):
            Path(outdir, name).write_text("nested ran")
        return nested

    callables = {
        "lambda": lambda name: write_marker(name, "lambda ran"),
        "closure": make_closure("closure ran"),
        "partial": functools.partial(write_marker, text="partial ran"),
        "nested": make_nested(),
        "main": write_marker,
    }
    store = MongoDBJobStore(database=database, host=uri, serializer="cloudpickle")
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc, jobstores={"default": store})
    scheduler.start(paused=True)  # store the jobs, run nothing in this process
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    for kind, func in callables.items():
        args = [kind, f"{kind} ran"] if kind == "main" else [kind]
        scheduler.add_job(func, "date", run_date=soon, id=kind, args=args, misfire_grace_time=600)
    scheduler.shutdown(wait=False)
    """
)

RUNNER = textwrap.dedent(
    """
    import datetime as dt, sys, threading
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.schedulers.background import BackgroundScheduler
    from jobshelf import MongoDBJobStore

    uri, database, outdir, *kinds = sys.argv[1:]
    pending, all_done = set(kinds), threading.Event()

    def finished(event):  # each job, run or not, ends with one of these events
        pending.discard(event.job_id)
        if not pending:
            all_done.set()

    store = MongoDBJobStore(database=database, host=uri, serializer="cloudpickle")
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc, jobstores={"default": store})
    scheduler.add_listener(finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start()
    all_done.wait(30)
    scheduler.shutdown()
    sys.exit(0 if all_done.is_set() else f"jobs that did not run within 30 s: {sorted(pending)}")
    """
)


def run(script: str, *args: str, cwd: Path) -> None:
    path = cwd / "script.py"
    path.write_text(script)
    result = subprocess.run(
        [sys.executable, str(path), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.subprocess
def test_by_value_callables_run_after_a_restart(mongodb_uri: str, database: str, tmp_path: Path) -> None:
    writer_dir, runner_dir, out = tmp_path / "writer", tmp_path / "runner", tmp_path / "out"
    for folder in (writer_dir, runner_dir, out):
        folder.mkdir()
    run(WRITER, mongodb_uri, database, str(out), cwd=writer_dir)
    assert not any(out.iterdir()), "the writer process must only store the jobs"
    run(RUNNER, mongodb_uri, database, str(out), *KINDS, cwd=runner_dir)
    assert {kind: (out / kind).read_text() for kind in KINDS if (out / kind).exists()} == {
        kind: f"{kind} ran" for kind in KINDS
    }


def test_pickle_serializer_refuses_a_lambda_and_suggests_cloudpickle(
    mongo_client: Any, database: str, scheduler: BackgroundScheduler
) -> None:
    store = MongoDBJobStore(database=database, client=mongo_client)
    with pytest.raises(SerializationError) as info:
        store.add_job(make_job(scheduler, "lam", func=lambda: None))
    assert "job 'lam'" in str(info.value)
    assert "serializer='cloudpickle'" in str(info.value)
    assert store.collection.count_documents({}) == 0


def test_importable_callables_keep_their_reference_and_the_c_pickler(
    scheduler: BackgroundScheduler,
) -> None:
    from jobshelf import job_to_state

    job = make_job(scheduler, func=dummy_job, args=(1, [2]))
    state = job_to_state(job, by_value=True)
    assert state["func"] == "tests.helpers:dummy_job"
    assert CloudPickleSerializer().dumps(state) == pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def test_lambda_in_kwargs_falls_back_to_cloudpickle(scheduler: BackgroundScheduler) -> None:
    serializer = CloudPickleSerializer()
    state = make_job(scheduler, kwargs={"callback": lambda x: x * 2}).__getstate__()
    restored = serializer.loads(serializer.dumps(state))
    assert restored["kwargs"]["callback"](21) == 42
