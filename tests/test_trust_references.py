"""The allow-list judges what a reference resolves to, not how it is spelled (issue 14, part 1).

``tests.trustapp.jobs`` imports ``logging`` and ``os``, re-exports ``helper`` from
``tests.trustapp.util`` and holds the usual look-alikes (class attributes that are modules, a
partial, a lambda, an inherited classmethod, a metaclass property). Every way through them to a
function defined elsewhere is refused, on read (quarantined before APScheduler resolves anything)
and on ``add_job``/``update_job``, in every format.
"""

from __future__ import annotations

import functools
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import msgpack
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import ref_to_obj
from hypothesis import given, settings
from hypothesis import strategies as st

from jobshelf import DeserializationError, MemoryJobStore, SerializationError
from jobshelf.mongodb import FORMAT_FIELD
from jobshelf.testing import sample_state
from tests.trustapp import jobs, lazy, tasks, util

from .forged_pickles import DUE
from .helpers import T0, audit_events, insert_document, make_job

APP = "tests.trustapp.jobs"


def _state(job_id: str, func: str, args: tuple[Any, ...] = ()) -> dict[str, Any]:
    state = sample_state()
    state.update(id=job_id, func=func, args=args)
    return state


def _encoded(serializer: str, state: dict[str, Any]) -> bytes:
    if serializer != "msgpack":
        return pickle.dumps(state)
    real = dict(state, func="tests.helpers:dummy_job")
    fields = msgpack.unpackb(MemoryJobStore(serializer="msgpack").serializer.dumps(real), raw=False)
    fields[2] = state["func"]  # the stored reference, as a writer of the collection sets it
    return msgpack.packb(fields)


def _forge(store: Any, serializer: str, job_id: str, func: str, args: tuple[Any, ...] = ()) -> None:
    data = _encoded(serializer, _state(job_id, func, args))
    document = {"_id": job_id, "next_run_time": DUE.timestamp(), "job_state": data, FORMAT_FIELD: serializer}
    insert_document(store, document)


# ----------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_a_module_attribute_of_an_allowed_module_is_not_a_door(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str, tmp_path: Path
) -> None:
    """Issue 14's example: ``myapp.jobs`` does ``import logging``; ``myapp.jobs:logging.os.system``
    resolved to ``os.system`` and the scheduler ran it."""
    store = make_store(serializer=serializer, allowed_callables=[APP])
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "good", func=jobs.job, next_run_time=T0))
    pwned = tmp_path / "pwned"
    _forge(store, serializer, "evil", f"{APP}:logging.os.system", (f"touch {pwned}",))
    with audit_events() as events:
        due = store.get_due_jobs(DUE)
        for job in due:
            job.func(*job.args)
    assert [job.id for job in due] == ["good"]
    assert not pwned.exists() and not [event for event in events if event[0] == "os.system"]
    (quarantined,) = store.get_quarantined_jobs()
    assert quarantined.id == "evil"
    assert f"job 'evil' calls '{APP}:logging.os.system', which goes through {APP}:logging, a module" in (
        quarantined.message
    )


def test_a_glob_matches_names_not_paths_through_attributes(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    """``myapp.tasks:send_*`` admitted ``myapp.tasks:send_mail.__globals__.get``."""
    store = make_store(serializer="msgpack", allowed_callables=["tests.trustapp.tasks:send_*"])
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "mail", func=tasks.send_mail, next_run_time=T0))
    for job_id, func in (
        ("globals", "tests.trustapp.tasks:send_mail.__globals__.get"),
        ("dotted", "tests.trustapp.tasks:send_mail.__call__"),
        ("other", "tests.trustapp.tasks:delete_everything"),
    ):
        _forge(store, "msgpack", job_id, func)
    assert [job.id for job in store.get_due_jobs(DUE)] == ["mail"]
    reasons = {job.id: job.message for job in store.get_quarantined_jobs()}
    assert sorted(reasons) == ["dotted", "globals", "other"]
    assert "must be plain identifiers" in reasons["globals"]
    assert "which allowed_callables does not allow" in reasons["other"]
    with pytest.raises(
        SerializationError, match="delete_everything', which allowed_callables does not allow"
    ):
        store.add_job(make_job(scheduler, "rm", func=tasks.delete_everything))


def test_a_function_re_exported_into_an_allowed_module_is_refused_with_what_to_allow(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    """``helper`` is defined in ``tests.trustapp.util`` and imported into the allowed module: its
    own ``__module__`` is elsewhere, so the allowed module's name for it is refused; allowing its
    defining module (or its exact reference) and naming it there works."""
    store = make_store(serializer="msgpack", allowed_callables=[APP])
    store.start(scheduler, "default")
    expected = (
        f"job 're-export' calls '{APP}:helper', which resolves to 'tests.trustapp.util:helper', defined in "
        f"'tests.trustapp.util' and only imported into '{APP}': allow 'tests.trustapp.util' (or exactly "
        "'tests.trustapp.util:helper') and name it 'tests.trustapp.util:helper'; nothing was written"
    )
    with pytest.raises(SerializationError) as raised:
        store.add_job(make_job(scheduler, "re-export", func=f"{APP}:helper"))
    assert str(raised.value) == expected
    _forge(store, "msgpack", "stored", f"{APP}:helper")
    assert store.lookup_job("stored") is None
    assert "resolves to 'tests.trustapp.util:helper'" in store.get_quarantined_jobs()[0].message
    widened = make_store(serializer="msgpack", allowed_callables=[APP, "tests.trustapp.util:helper"])
    widened.start(scheduler, "default")
    widened.add_job(make_job(scheduler, "defined-there", func=util.helper))  # by its own reference
    restored = widened.lookup_job("defined-there")
    assert restored is not None and restored.func is util.helper


REFUSED = {
    # module attributes of the allowed module
    f"{APP}:util.helper": "goes through tests.trustapp.jobs:util, a module",
    f"{APP}:GETCWD": "resolves to 'posix:getcwd', defined in 'posix'",
    f"{APP}:LOGGER": "which is a Logger",
    f"{APP}:logging.os.system": "goes through tests.trustapp.jobs:logging, a module",
    # class attributes that are modules, or defined elsewhere
    f"{APP}:Jobs.os.system": "goes through tests.trustapp.jobs:Jobs.os, a module",
    f"{APP}:Jobs.helper": "resolves to 'tests.trustapp.util:helper'",
    f"{APP}:Child.create": "resolves to an object whose own module and qualified name are "
    "'tests.trustapp.jobs:Jobs.create'",
    # a metaclass whose property getattr would run
    f"{APP}:WithMeta.trap": "has a metaclass (Meta) that defines 'trap'",
    # dunders, and attributes of functions
    f"{APP}:Jobs.__class__": "must be plain identifiers",
    f"{APP}:Jobs.__mro__": "must be plain identifiers",
    f"{APP}:Jobs.__subclasses__": "must be plain identifiers",
    f"{APP}:__builtins__.get": "must be plain identifiers",
    f"{APP}:job.__globals__.get": "must be plain identifiers",
    f"{APP}:Jobs.method.__call__": "must be plain identifiers",
    f"{APP}:job.get": "goes through tests.trustapp.jobs:job, a function",
    f"{APP}:_private_job_": "must be plain identifiers",
    # things that are not functions or classes, or lie about their names
    f"{APP}:partial_job": "which is a partial",
    f"{APP}:lambda_job": "'tests.trustapp.jobs:<lambda>'",
    f"{APP}:wrapped": "whose own module and qualified name are 'tests.trustapp.jobs:job'",
    f"{APP}:RAN": "which is a list",
    f"{APP}:missing": "which names nothing",
    # a module whose __getattr__ would run, a module that does not exist
    "tests.trustapp.lazy:anything": "which names nothing",
    "tests.trustapp.nothing_here:job": "whose module cannot be imported",
}


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_every_look_alike_is_refused_on_read(
    make_store: Any, scheduler: BackgroundScheduler, serializer: str
) -> None:
    jobs.TRAPPED.clear()
    lazy.ASKED.clear()
    store = make_store(serializer=serializer, allowed_callables=["tests.trustapp"])
    store.start(scheduler, "default")
    for number, reference in enumerate(REFUSED):
        _forge(store, serializer, f"evil-{number}", reference)
    with audit_events() as events:
        assert store.get_due_jobs(DUE) == []
    assert not [event for event in events if event[0] in ("os.system", "exec", "compile")]
    reasons = {job.id: job.message for job in store.get_quarantined_jobs()}
    for number, (reference, reason) in enumerate(REFUSED.items()):
        assert f"job 'evil-{number}' calls {reference!r}, " in reasons[f"evil-{number}"]
        assert reason in reasons[f"evil-{number}"], reference
    assert jobs.TRAPPED == [] and lazy.ASKED == []  # no metaclass property, no module __getattr__ ran


#: The look-alikes APScheduler itself resolves (so that a job can be made with them), with arguments
#: their signatures take.
RESOLVABLE = {
    f"{APP}:logging.os.system": ("true",), f"{APP}:Jobs.os.system": ("true",), f"{APP}:GETCWD": (),
    f"{APP}:util.helper": (1,), f"{APP}:Jobs.helper": (1,), f"{APP}:Child.create": (1,),
    f"{APP}:partial_job": (1,), f"{APP}:lambda_job": (1,), f"{APP}:wrapped": (1,),
}  # fmt: skip


@pytest.mark.parametrize("reference", sorted(RESOLVABLE))
def test_every_look_alike_is_refused_on_write(scheduler: BackgroundScheduler, reference: str) -> None:
    store = MemoryJobStore(serializer="msgpack", allowed_callables=["tests.trustapp"])
    store.start(scheduler, "default")
    store.add_job(make_job(scheduler, "kept", func=jobs.job))
    reason, args = REFUSED[reference], RESOLVABLE[reference]
    with pytest.raises(SerializationError, match=r"nothing was written$") as raised:
        store.add_job(make_job(scheduler, "added", func=reference, args=args))
    assert f"job 'added' calls {reference!r}, which" in str(raised.value) and reason in str(raised.value)
    with pytest.raises(SerializationError, match=f"job 'kept' calls {reference!r}, which"):
        store.update_job(make_job(scheduler, "kept", func=reference, args=args))
    assert store.lookup_job("kept").func is jobs.job  # type: ignore[union-attr]
    assert store.lookup_job("added") is None


ALLOWED = {
    f"{APP}:job": jobs.job,
    f"{APP}:_private_job": jobs._private_job,
    f"{APP}:cached": jobs.cached,
    f"{APP}:Jobs": jobs.Jobs,
    f"{APP}:Jobs.create": jobs.Jobs.create,
    f"{APP}:Jobs.static": jobs.Jobs.static,
    f"{APP}:Jobs.Nested.run": jobs.Jobs.Nested.run,
    f"{APP}:WithMeta.plain": jobs.WithMeta.plain,
}


@pytest.mark.parametrize("reference", sorted(ALLOWED))
def test_functions_and_classes_defined_in_an_allowed_module_are_allowed(
    make_store: Any, scheduler: BackgroundScheduler, reference: str
) -> None:
    store = make_store(serializer="msgpack", allowed_callables=["tests.trustapp"])
    store.start(scheduler, "default")
    _forge(store, "msgpack", "stored", reference)
    job = store.lookup_job("stored")
    assert job is not None and job.func == ALLOWED[reference]  # a classmethod comes back bound
    store.update_job(job)  # and is written back under its own reference
    assert store.lookup_job("stored").func_ref == reference  # type: ignore[union-attr]


def test_a_glob_never_matches_a_dot(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store(serializer="msgpack", allowed_callables=[f"{APP}:Jobs.*"])
    store.start(scheduler, "default")
    _forge(store, "msgpack", "one-level", f"{APP}:Jobs.create")
    _forge(store, "msgpack", "two-levels", f"{APP}:Jobs.Nested.run")
    assert [job.id for job in store.get_due_jobs(DUE)] == ["one-level"]
    assert [job.id for job in store.get_quarantined_jobs()] == ["two-levels"]
    with pytest.raises(ValueError, match="a wildcard never matches a dot"):
        MemoryJobStore(allowed_callables=["tests.trustapp.jobs:job.__glo*:x"])
    with pytest.raises(ValueError, match="a module name is dotted identifiers"):
        MemoryJobStore(allowed_callables=["tests.*"])


def test_only_allowed_modules_are_imported_to_judge_a_reference(scheduler: BackgroundScheduler) -> None:
    """Judging a reference imports its module only when the list allows it (APScheduler would import
    it to run the job anyway); a module outside the list is never imported."""
    store = MemoryJobStore(serializer="msgpack", allowed_callables=["tests.trustapp"])
    store.start(scheduler, "default")
    for name in ("tests.trustapp.on_demand", "tests.evil_module"):
        sys.modules.pop(name, None)
    _forge(store, "msgpack", "outside", "tests.evil_module:IMPORTED")
    _forge(store, "msgpack", "inside", "tests.trustapp.on_demand:job")
    with audit_events() as events:
        due = store.get_due_jobs(DUE)
    assert [job.id for job in due] == ["inside"]
    assert "tests.evil_module" not in sys.modules and "tests.trustapp.on_demand" in sys.modules
    assert [event for event in events if "on_demand" in event[1]]  # compiled and run: imported
    assert not [event for event in events if "evil" in event[1]]


def test_a_non_module_in_sys_modules_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``sys.modules`` entry that is not a plain module (a lazy-module object, a class posing as
    a module) answers attribute lookups with its own code: refused rather than asked."""
    asked: list[str] = []

    class Impostor(types.ModuleType):
        def __getattribute__(self, name: str) -> Any:
            asked.append(name)
            return super().__getattribute__(name)

    impostor = Impostor("tests.trustapp.impostor")
    impostor.job = jobs.job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.trustapp.impostor", impostor)
    store = MemoryJobStore(serializer="msgpack", allowed_callables=["tests.trustapp"])
    _forge(store, "msgpack", "impostor", "tests.trustapp.impostor:job")
    with pytest.raises(DeserializationError, match=r"whose module is a Impostor in sys\.modules"):
        store.decode_state("impostor")
    assert asked == []


# ----------------------------------------------------------------------------- the property


def _walk(module: types.ModuleType, names: list[str]) -> Any:
    """Where getattr (as APScheduler resolves a reference) leads, or None."""
    found: Any = module
    for name in names:
        try:
            found = getattr(found, name)
        except Exception:
            return None
    return found


def _own(obj: Any) -> str | None:
    obj = getattr(obj, "__func__", obj)  # a bound classmethod: the function
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if type(module) is str and type(qualname) is str else None


@st.composite
def references(draw: st.DrawFn) -> tuple[types.ModuleType, list[str]]:
    """A module of the allowed package and a path of attribute names through it, as dir() lists
    them (dunders included), or made up."""
    module = draw(st.sampled_from([jobs, tasks, util, lazy]))
    names: list[str] = []
    current: Any = module
    for _ in range(draw(st.integers(1, 4))):
        try:
            choices = sorted(dir(current))
        except Exception:
            choices = []
        made_up = st.from_regex(r"[A-Za-z_][a-z_]{0,8}", fullmatch=True)
        name = draw(st.sampled_from(choices) | made_up if choices else made_up)
        names.append(name)
        try:
            current = getattr(current, name)
        except Exception:
            break
    return module, names


@settings(max_examples=400, deadline=None)
@given(drawn=references())
def test_a_reference_is_admitted_only_if_its_target_is_defined_there(
    drawn: tuple[types.ModuleType, list[str]],
) -> None:
    module, names = drawn
    reference = f"{module.__name__}:{'.'.join(names)}"
    store = MemoryJobStore(serializer="msgpack", allowed_callables=["tests.trustapp"])
    _forge(store, "msgpack", "drawn", reference)
    target = _walk(module, names)
    try:
        store.decode_state("drawn")
    except DeserializationError:
        admitted = False
    else:
        admitted = True
    if admitted:
        # what APScheduler will resolve is a function or class defined exactly where it says
        assert _own(target) == reference
        assert isinstance(
            getattr(target, "__func__", target), (types.FunctionType, type, functools._lru_cache_wrapper)
        )
        assert _own(ref_to_obj(reference)) == reference
    plain = all(name.isidentifier() and not name.startswith("__") for name in names)
    through_classes = all(type(_walk(module, names[:depth])) is type for depth in range(1, len(names)))
    defined_here = isinstance(getattr(target, "__func__", target), (types.FunctionType, type))
    if plain and through_classes and defined_here and _own(target) == reference and "<" not in reference:
        assert admitted, reference
