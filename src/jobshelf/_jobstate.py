"""Job <-> job state, store-agnostic.

APScheduler's ``Job.__getstate__``/``__setstate__`` define the state. They store the callable as a
textual reference (``"module:qualname"``) and refuse callables that have none. For serializers that
store callables by value (cloudpickle), the state carries the callable object itself instead of the
reference, for lambdas, closures, partials, nested functions and functions defined in ``__main__``.
"""

from __future__ import annotations

import sys
from typing import Any

from apscheduler.job import Job
from apscheduler.util import ref_to_obj

from ._exceptions import DeserializationError, SerializationError

__all__ = ["job_to_state", "needs_by_value", "resolve_reference", "state_to_job"]


def needs_by_value(job: Job) -> bool:
    """True when the job's callable cannot be stored as a reference that resolves elsewhere."""
    ref = job.func_ref
    return ref is None or ref.startswith("__main__:")


def job_to_state(job: Job, *, by_value: bool = False, format_name: str = "pickle") -> dict[str, Any]:
    """Return the job's state dict; with ``by_value`` the callable itself where it must be.

    :raises SerializationError: the callable has no textual reference and ``by_value`` is off
    """
    if by_value and needs_by_value(job):
        return {
            "version": 1,
            "id": job.id,
            "func": job.func,
            "trigger": job.trigger,
            "executor": job.executor,
            "args": job.args,
            "kwargs": job.kwargs,
            "name": job.name,
            "misfire_grace_time": job.misfire_grace_time,
            "coalesce": job.coalesce,
            "max_instances": job.max_instances,
            "next_run_time": job.next_run_time,
        }
    if job.func_ref is None:
        raise SerializationError(
            f"job {job.id!r}: its callable {job.func!r} has no textual reference (a lambda, "
            f"closure, partial or nested function), and the {format_name!r} serializer stores "
            "callables by reference only; use serializer='cloudpickle' to store it by value, or "
            "pass a 'module:function' reference"
        )
    state: dict[str, Any] = job.__getstate__()
    return state


def resolve_reference(ref: str) -> Any:
    """``apscheduler.util.ref_to_obj`` without its import machinery when the module is loaded.

    The object is looked up anew on every call (so patched functions are seen), straight from
    ``sys.modules``; anything else (a module not imported yet, a submodule) goes to ``ref_to_obj``.
    """
    module_name, colon, rest = ref.partition(":")
    target = sys.modules.get(module_name) if colon else None
    if target is not None:
        try:
            for name in rest.split("."):
                target = getattr(target, name)
        except AttributeError:
            pass
        else:
            return target
    return ref_to_obj(ref)


def state_to_job(state: dict[str, Any], scheduler: Any = None, alias: str | None = None) -> Job:
    """Rebuild a :class:`~apscheduler.job.Job` from its state and attach it to a scheduler.

    Equivalent to ``Job.__setstate__`` (version 1 states; newer ones get APScheduler's error),
    plus by-value callables.

    :raises DeserializationError: the state is malformed or its callable cannot be resolved
    """
    job: Job = Job.__new__(Job)
    try:
        if state.get("version", 1) > 1:
            job.__setstate__(state)  # raises APScheduler's own "only version 1" error
        func = state["func"]
        if isinstance(func, str):
            job.func = resolve_reference(func)
            job.func_ref = func
        elif callable(func):
            job.func = func
            job.func_ref = None
        else:
            raise TypeError(f"func is {type(func).__name__}, expected a reference or a callable")
        job.id = state["id"]
        job.trigger = state["trigger"]
        job.executor = state["executor"]
        job.args = state["args"]
        job.kwargs = state["kwargs"]
        job.name = state["name"]
        job.misfire_grace_time = state["misfire_grace_time"]
        job.coalesce = state["coalesce"]
        job.max_instances = state["max_instances"]
        job.next_run_time = state["next_run_time"]
    except Exception as exc:
        raise DeserializationError(
            f"job {state.get('id')!r}: cannot rebuild the job from its state: {type(exc).__name__}: {exc}"
        ) from exc
    job._scheduler = scheduler
    job._jobstore_alias = alias
    return job
