"""Jobs, callables and comparisons shared by the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from jobshelf._compare import state_difference

UTC = dt.timezone.utc
CALLS: list[Any] = []


def dummy_job(*args: Any, **kwargs: Any) -> None:
    """An importable callable for jobs under test."""
    CALLS.append((args, kwargs))


class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def make_job(
    scheduler: Any,
    job_id: str = "job1",
    *,
    next_run_time: dt.datetime | None = dt.datetime(2030, 1, 1, tzinfo=UTC),
    trigger: BaseTrigger | None = None,
    func: Any = dummy_job,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Job:
    """A job as ``scheduler.add_job`` builds it, not yet added to a store."""
    if trigger is None:
        trigger = DateTrigger(next_run_time or dt.datetime(2030, 1, 1, tzinfo=UTC))
    settings: dict[str, Any] = {
        "func": func,
        "trigger": trigger,
        "executor": "default",
        "args": tuple(args) if isinstance(args, list) else args,
        "kwargs": kwargs or {},
        "misfire_grace_time": 1,
        "coalesce": False,
        "max_instances": 1,
        "next_run_time": next_run_time,
    }
    settings.update(options)
    return Job(scheduler, id=job_id, **settings)


def assert_same_job(expected: Job, actual: Job | None) -> None:
    """Job state equal exactly (types included) and the same next fire times."""
    assert actual is not None, f"job {expected.id!r} was not returned"
    difference = state_difference(expected.__getstate__(), actual.__getstate__())
    assert difference is None, difference
    now = expected.next_run_time or dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert expected.trigger.get_next_fire_time(None, now) == actual.trigger.get_next_fire_time(None, now)
