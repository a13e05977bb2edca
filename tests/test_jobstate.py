"""Job <-> state: jobshelf's rebuild equals APScheduler's own ``Job.__setstate__``."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from hypothesis import given

from jobshelf import DeserializationError, SerializationError, job_to_state, state_to_job
from jobshelf.testing import job_states

from . import helpers
from .helpers import Greeter, make_job

SLOTS = [slot for slot in Job.__slots__ if slot not in ("__weakref__", "_scheduler", "_jobstore_alias")]


def apscheduler_restore(state: dict[str, Any]) -> Job:
    job = Job.__new__(Job)
    job.__setstate__(state)
    return job


@given(state=job_states())
def test_rebuild_sets_every_slot_as_apscheduler_does(state: dict[str, Any]) -> None:
    scheduler = mock.Mock(spec=BackgroundScheduler)
    ours, theirs = state_to_job(state, scheduler, "alias"), apscheduler_restore(state)
    for slot in SLOTS:
        assert getattr(ours, slot) is getattr(theirs, slot), slot
    ours.pause()  # attached: the job's own methods reach the scheduler it was given, with the alias
    scheduler.pause_job.assert_called_once_with(state["id"], "alias")


def test_bound_methods_round_trip_like_apscheduler(scheduler: BackgroundScheduler) -> None:
    greeter = Greeter()
    state = make_job(scheduler, func=greeter.greet, args=("bob",)).__getstate__()
    ours, theirs = state_to_job(state), apscheduler_restore(state)
    for slot in SLOTS:
        assert getattr(ours, slot) == getattr(theirs, slot), slot


def test_references_are_resolved_anew_so_patches_are_seen() -> None:
    def resolved(reference: str) -> object:
        state = make_job(BackgroundScheduler(), "r").__getstate__()
        state["func"] = reference
        return state_to_job(state).func

    assert resolved("tests.helpers:dummy_job") is helpers.dummy_job
    with mock.patch("tests.helpers.dummy_job") as patched:
        assert resolved("tests.helpers:dummy_job") is patched
    assert resolved("tests.helpers:Greeter.greet") is Greeter.greet
    assert resolved("json:dumps").__module__ == "json"  # not imported yet is fine too


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"func": "no_such_module:f"}, "could not import module"),
        ({"func": "tests.helpers:missing"}, "error looking up object"),
        ({"func": 42}, "func is int"),
        ({"version": 2}, "only version 1 can be handled"),
    ],
)
def test_bad_states_raise_deserialization_errors(
    scheduler: BackgroundScheduler, change: dict[str, Any], message: str
) -> None:
    state = {**make_job(scheduler, "bad").__getstate__(), **change}
    with pytest.raises(DeserializationError, match=f"job 'bad': .*{message}") as info:
        state_to_job(state)
    assert info.value.__cause__ is not None


def test_by_value_only_where_needed(scheduler: BackgroundScheduler) -> None:
    def closure() -> None: ...

    assert job_to_state(make_job(scheduler, func=closure), by_value=True)["func"] is closure
    assert job_to_state(make_job(scheduler), by_value=True)["func"] == "tests.helpers:dummy_job"
    with pytest.raises(SerializationError, match="use serializer='cloudpickle'"):
        job_to_state(make_job(scheduler, "c", func=closure), format_name="msgpack")
    restored = state_to_job(job_to_state(make_job(scheduler, func=closure), by_value=True))
    assert restored.func is closure
    assert restored.func_ref is None
    assert restored.next_run_time == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
