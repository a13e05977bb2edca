"""The conformance properties through the store: what goes into MongoDB comes back exactly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from jobshelf import MongoDBJobStore, SerializationError, state_to_job
from jobshelf.testing import fire_times, job_states, state_difference
from jobshelf.testing.strategies import aware_datetimes

# the float next_run_time field must exist for every stored time: keep one day off the year limits
next_run_times = st.none() | aware_datetimes(min_year=2, max_year=9998)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])  # fmt: skip
@given(state=job_states(next_run_times=next_run_times))
def test_jobs_read_back_equal_through_every_query(
    store: MongoDBJobStore, scheduler: BackgroundScheduler, state: dict[str, Any]
) -> None:
    store.remove_all_jobs()  # one store per test, fresh per example
    job = state_to_job(state, scheduler, "default")
    try:
        store.add_job(job)
    except SerializationError as exc:  # a schedule APScheduler cannot compute: refused, nothing written
        assert "has a schedule APScheduler cannot compute" in str(exc)
        assert store.get_all_jobs() == []
        reject()

    found = {"lookup_job": store.lookup_job(job.id), "get_all_jobs": store.get_all_jobs()[0]}
    if job.next_run_time is not None:
        due = store.get_due_jobs(job.next_run_time)
        assert [candidate.id for candidate in due] == [job.id]
        found["get_due_jobs"] = due[0]
        # the float field is the stock store's query key: exact to the microsecond until ~2242
        stored = utc_timestamp_to_datetime(datetime_to_utc_timestamp(job.next_run_time))
        assert store.get_next_run_time() == stored
        assert store.get_due_jobs(job.next_run_time - dt.timedelta(milliseconds=1)) == []
    else:
        assert store.get_next_run_time() is None

    for query, restored in found.items():
        assert restored is not None, query
        difference = state_difference(state, restored.__getstate__())
        assert difference is None, f"{query}: {difference}"
        now = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
        assert state_difference(fire_times(job.trigger, now), fire_times(restored.trigger, now)) is None
