"""APScheduler's job store contract, for every serializer, on both adapters: MongoDB (a real
wire-protocol server) and the in-process store. MongoDB-only behaviour is in test_mongodb.py."""

from __future__ import annotations

import datetime as dt
import threading
from unittest import mock

import pytest
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from jobshelf import SerializationError

from .helpers import T0, AnyStore, assert_same_job, at, document_ids, make_job


class TestContract:
    def test_add_then_lookup_returns_an_equal_job(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        job = make_job(
            scheduler,
            trigger=IntervalTrigger(minutes=5, start_date=T0, timezone="Europe/Berlin"),
            args=(1, "a", [2, 3]),
            kwargs={"k": (4, 5)},
        )
        store.add_job(job)
        assert_same_job(job, store.lookup_job("job1"))

    def test_lookup_of_missing_job_is_none(self, store: AnyStore) -> None:
        assert store.lookup_job("nope") is None

    def test_duplicate_id_raises_conflict_and_keeps_the_first(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        first = make_job(scheduler, args=(1,))
        store.add_job(first)
        with pytest.raises(ConflictingIdError, match="job1"):
            store.add_job(make_job(scheduler, args=(2,)))
        assert_same_job(first, store.lookup_job("job1"))

    def test_update_rewrites_state_and_run_time(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        store.add_job(make_job(scheduler, next_run_time=at(5)))
        changed = make_job(scheduler, next_run_time=at(9), args=("changed",), name="renamed")
        store.update_job(changed)
        assert_same_job(changed, store.lookup_job("job1"))
        assert store.get_next_run_time() == at(9)

    def test_update_of_missing_job_raises_lookup_error(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        with pytest.raises(JobLookupError, match="nope"):
            store.update_job(make_job(scheduler, "nope"))
        assert store.get_all_jobs() == []

    def test_remove_job(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        store.add_job(make_job(scheduler, "a"))
        store.add_job(make_job(scheduler, "b"))
        store.remove_job("a")
        assert [job.id for job in store.get_all_jobs()] == ["b"]
        with pytest.raises(JobLookupError, match="id of a was"):
            store.remove_job("a")

    def test_remove_all_jobs(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        for name in "abc":
            store.add_job(make_job(scheduler, name))
        store.remove_all_jobs()
        assert store.get_all_jobs() == []
        assert store.get_next_run_time() is None

    def test_due_jobs_sorted_by_time_then_id(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        plan = {"late": at(3), "b-tie": at(1), "a-tie": at(1), "first": at(0), "future": at(60)}
        for job_id, when in plan.items():
            store.add_job(make_job(scheduler, job_id, next_run_time=when))
        store.add_job(make_job(scheduler, "paused", next_run_time=None))
        due = store.get_due_jobs(at(3))
        assert [job.id for job in due] == ["first", "a-tie", "b-tie", "late"]
        assert [job.next_run_time for job in due] == [at(0), at(1), at(1), at(3)]
        assert store.get_due_jobs(at(-1)) == []

    def test_due_jobs_compare_instants_across_zones(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        store.add_job(make_job(scheduler, next_run_time=at(0)))
        berlin = at(0).astimezone(dt.timezone(dt.timedelta(hours=1)))
        assert [job.id for job in store.get_due_jobs(berlin)] == ["job1"]
        assert store.get_due_jobs(berlin - dt.timedelta(microseconds=1)) == []

    def test_next_run_time_is_earliest_active(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        assert store.get_next_run_time() is None
        store.add_job(make_job(scheduler, "paused", next_run_time=None))
        assert store.get_next_run_time() is None
        store.add_job(make_job(scheduler, "b", next_run_time=at(7)))
        store.add_job(make_job(scheduler, "a", next_run_time=at(2)))
        next_time = store.get_next_run_time()
        assert next_time == at(2)
        assert next_time.tzinfo is not None

    def test_all_jobs_sorted_with_paused_last(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        store.add_job(make_job(scheduler, "p2", next_run_time=None))
        store.add_job(make_job(scheduler, "late", next_run_time=at(9)))
        store.add_job(make_job(scheduler, "p1", next_run_time=None))
        store.add_job(make_job(scheduler, "early", next_run_time=at(1)))
        assert [job.id for job in store.get_all_jobs()] == ["early", "late", "p1", "p2"]

    def test_returned_jobs_are_attached_and_aware(
        self, store: AnyStore, scheduler: BackgroundScheduler
    ) -> None:
        store.add_job(make_job(scheduler, next_run_time=at(0)))
        for job in [store.lookup_job("job1"), *store.get_due_jobs(at(0)), *store.get_all_jobs()]:
            assert job is not None
            # attached: the job's own methods reach this scheduler, naming this store's alias
            with mock.patch.object(scheduler, "modify_job") as modify_job:
                job.modify(name="renamed")
            modify_job.assert_called_once_with("job1", "default", name="renamed")
            assert job.next_run_time.tzinfo is not None
            assert job.next_run_time == at(0)

    def test_failed_encoding_writes_nothing(self, store: AnyStore, scheduler: BackgroundScheduler) -> None:
        store.add_job(make_job(scheduler, "kept", args=(1,)))
        lock = threading.Lock()
        with pytest.raises(SerializationError, match="job 'bad'"):
            store.add_job(make_job(scheduler, "bad", args=(lock,)))
        with pytest.raises(SerializationError, match="job 'kept'"):
            store.update_job(make_job(scheduler, "kept", args=(lock,)))
        assert document_ids(store) == ["kept"]
        assert store.lookup_job("kept").args == (1,)  # type: ignore[union-attr]
