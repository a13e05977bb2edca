"""``allow_by_value=True`` admits what storing callables by value needs, and nothing more (issue 14,
part 3).

It used to read pickle and cloudpickle states with plain ``pickle.loads``: a forged ``__reduce__``
to ``os.system`` ran on read. Now such states go through the restricted unpickler, which also
builds (never calls) cloudpickle's code objects and functions. What the opt-in gives up, exactly:
the callable stored by value runs with full power when the job fires.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.testing import sample_state
from tests.trustapp import jobs, runs

from .forged_pickles import DUE, call, glob, job_state, stack_global, text, value
from .helpers import T0, audit_events, insert_document, make_job

UTC = dt.timezone.utc
BY_VALUE = {"allowed_callables": ["tests.trustapp"], "allow_by_value": True}
def _insert(store: Any, job_id: str, data: bytes, fmt: str) -> None:
    insert_document(
        store, {"_id": job_id, "next_run_time": DUE.timestamp(), "job_state": data, FORMAT_FIELD: fmt}
    )


class Forged:
    """Pickles into "run this shell command" (what the writer of a collection stores)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def _forgeries(path: Path) -> dict[str, bytes]:
    command = f"touch {path}"
    python = f"__import__('os').system({command!r})"
    state = sample_state()
    state.update(id="reduce", func="tests.trustapp.jobs:job", args=(Forged(command),))
    return {
        "reduce": pickle.dumps(state),  # os.system as pickle writes it: posix.system
        "os-system": job_state("os-system", call(glob("os", "system"), text(command))),
        "eval": job_state("eval", call(glob("builtins", "eval"), text(python))),
        "exec": job_state("exec", call(stack_global("builtins", "exec"), text(python))),
        "popen": job_state("popen", call(glob("subprocess", "Popen"), value(("touch", str(path))))),
        "import": job_state("import", call(glob("builtins", "__import__"), text("tests.evil_module"))),
    }


@pytest.mark.parametrize("serializer", ["pickle", "cloudpickle"])
def test_a_forged_reduce_is_refused_under_allow_by_value(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, tmp_path: Path
) -> None:
    store = make_store(serializer=serializer, **BY_VALUE)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", func=jobs.job, next_run_time=T0))
    pwned = tmp_path / "pwned"
    forgeries = _forgeries(pwned)
    for job_id, data in forgeries.items():
        _insert(store, job_id, data, serializer)
    sys.modules.pop("tests.evil_module", None)
    with audit_events() as events:
        due = store.get_due_jobs(DUE)
    assert [job.id for job in due] == ["good"]
    assert events == [], events
    assert not pwned.exists() and "tests.evil_module" not in sys.modules
    reasons = {job.id: job.message for job in store.get_quarantined_jobs()}
    assert sorted(reasons) == sorted(forgeries)
    for job_id, message in reasons.items():
        assert message.startswith(f"job {job_id!r} ({serializer}): ")
        assert (
            "decoding calls only admitted constructors" in message or "is not part of a job state" in message
        )


def _by_value_payloads() -> dict[str, tuple[bytes, str]]:
    cp = "cloudpickle.cloudpickle"
    code_of = call(glob(cp, "_builtin_type"), text("CodeType"))
    return {
        "module-type": (
            call(glob(cp, "_builtin_type"), text("ModuleType")),
            "only CodeType, MethodType and CellType",
        ),
        "subimport": (
            call(glob(cp, "subimport"), text("tests.evil_module")),
            "not imported and not in allowed",
        ),
        "setstate-of-a-real-function": (
            call(glob(cp, "_function_setstate"), glob("tests.trustapp.jobs", "job"), value(({}, {}))),
            "fills in only a function this pickle built",
        ),
        "make-function": (
            call(glob(cp, "_make_function"), text("print(1)"), *[value(None)] * 4),
            "arguments of the wrong types",
        ),
        "code-of-objects": (
            call(code_of, glob("tests.trustapp.jobs", "Jobs")),
            "built of ints, bytes, strings",
        ),
        "dynamic-class": (
            call(glob(cp, "_make_skeleton_class"), value(None), text("X"), value(())),
            "decoding calls only admitted constructors",
        ),
        "call-a-reference": (
            call(glob("posix", "system"), text("true")),
            "decoding calls only admitted constructors",
        ),
    }


@pytest.mark.parametrize("case", sorted(_by_value_payloads()))
def test_cloudpickles_reconstructors_only_build(scheduler: BackgroundScheduler, case: str) -> None:
    from jobshelf import MemoryJobStore

    payload, expected = _by_value_payloads()[case]
    store = MemoryJobStore(serializer="cloudpickle", **BY_VALUE)
    store.start(scheduler, "default")
    sys.modules.pop("tests.evil_module", None)
    _insert(store, case, job_state(case, payload), "cloudpickle")
    with audit_events() as events:
        assert store.get_due_jobs(DUE) == []
    assert events == [] and "tests.evil_module" not in sys.modules
    (quarantined,) = store.get_quarantined_jobs()
    assert expected in quarantined.message, quarantined.message


def _make_closure(tag: str) -> Any:
    def closure() -> None:
        runs.RUNS.record(tag)

    return closure


def test_decoding_builds_a_callable_by_value_and_never_runs_it(
    scheduler: BackgroundScheduler, tmp_path: Path
) -> None:
    from jobshelf import MemoryJobStore

    marker = tmp_path / "ran"
    path = str(marker)  # captured by value: a str (a Path would need pathlib in allowed_callables)
    store = MemoryJobStore(serializer="cloudpickle", **BY_VALUE)
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "writes", func=lambda: os.mkdir(path), next_run_time=T0))
    with audit_events() as events:
        (job,) = store.get_due_jobs(T0)
    assert not marker.exists() and events == []
    job.func()  # the callable itself is the job's code: it runs when the job fires
    assert marker.is_dir()


def test_lambdas_closures_partials_and_nested_functions_run_under_a_scheduler(make_store: Any) -> None:
    def nested() -> None:
        runs.RUNS.record("nested")

    callables = {
        "lambda": lambda: runs.RUNS.record("lambda"),
        "closure": _make_closure("closure"),
        "partial": functools.partial(runs.record_run, "partial"),
        "nested": nested,
    }
    runs.RUNS.clear()
    store = make_store(serializer="cloudpickle", **BY_VALUE)
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    scheduler.start(paused=True)
    try:
        soon = dt.datetime.now(UTC) + dt.timedelta(seconds=1)
        for name, func in callables.items():
            scheduler.add_job(func, "date", run_date=soon, id=name, misfire_grace_time=600)
        scheduler.resume()
        assert runs.RUNS.wait_until(lambda counts: all(counts[name] == 1 for name in callables), timeout=30)
    finally:
        scheduler.shutdown()
    assert store.get_quarantined_jobs() == []


WRITER = textwrap.dedent(
    """
    import datetime as dt, functools, sys
    from pathlib import Path
    from apscheduler.schedulers.background import BackgroundScheduler
    from jobshelf import MongoDBJobStore

    uri, database, outdir = sys.argv[1:4]

    def write_marker(name, text):  # defined in __main__: stored by value
        Path(outdir, name).write_text(text)

    def make_closure(tag):
        def closure(name):
            write_marker(name, tag)
        return closure

    callables = {
        "lambda": lambda name: write_marker(name, "lambda ran"),
        "closure": make_closure("closure ran"),
        "partial": functools.partial(write_marker, text="partial ran"),
        "main": write_marker,
    }
    store = MongoDBJobStore(database=database, host=uri, serializer="cloudpickle")
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc, jobstores={"default": store})
    scheduler.start(paused=True)
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

    def finished(event):
        pending.discard(event.job_id)
        if not pending:
            all_done.set()

    store = MongoDBJobStore(database=database, host=uri, serializer="cloudpickle",
                            allowed_callables=["no.such.module"], allow_by_value=True)
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc, jobstores={"default": store})
    scheduler.add_listener(finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start()
    all_done.wait(30)
    quarantined = [job.id for job in store.get_quarantined_jobs()]
    scheduler.shutdown()
    ok = all_done.is_set() and not quarantined
    sys.exit(0 if ok else f"not run: {sorted(pending)}, quarantined: {quarantined}")
    """
)
KINDS = ("lambda", "closure", "partial", "main")


@pytest.mark.subprocess
def test_main_functions_by_value_run_in_another_process_under_an_allow_list(
    mongodb_uri: str, database: str, tmp_path: Path
) -> None:
    """The functions of a script (``__main__``) stored by value, read by another process whose
    allow-list names none of them: they refer to ``pathlib.Path`` and ``functools.partial``, already
    imported there, and run."""
    out = tmp_path / "out"
    out.mkdir()
    for script, args in ((WRITER, ()), (RUNNER, KINDS)):
        path = tmp_path / "script.py"
        path.write_text(script)
        result = subprocess.run(
            [sys.executable, str(path), mongodb_uri, database, str(out), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    assert {kind: (out / kind).read_text() for kind in KINDS} == {kind: f"{kind} ran" for kind in KINDS}


def test_what_cloudpickle_writes_is_all_admitted() -> None:
    """The reconstructors admitted are the ones cloudpickle's own output names."""
    names: set[str] = set()

    class Recorder(pickle._Unpickler):  # type: ignore[misc,name-defined]
        def find_class(self, module: str, name: str) -> Any:
            names.add(f"{module}:{name}")
            return super().find_class(module, name)

    def nested() -> int:
        return 1

    for func in (lambda: runs.RUNS, _make_closure("x"), functools.partial(runs.record_run, "x"), nested):
        state = sample_state()
        state["func"] = func
        Recorder(io.BytesIO(cloudpickle.dumps(state, 5))).load()
    assert {name for name in names if name.startswith("cloudpickle")} == {
        "cloudpickle.cloudpickle:_builtin_type", "cloudpickle.cloudpickle:_make_function",
        "cloudpickle.cloudpickle:_function_setstate", "cloudpickle.cloudpickle:_make_cell",
        "cloudpickle.cloudpickle:_make_empty_cell", "cloudpickle.cloudpickle:subimport",
    }  # fmt: skip
    assert "functools:partial" in names
