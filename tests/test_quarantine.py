"""A job that cannot be decoded is never deleted: it is quarantined, with the reason."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from jobshelf.mongodb import FORMAT_FIELD, QUARANTINE_FIELD

from .helpers import T0, AnyStore, document_ids, find_document, insert_document, make_job


def insert_broken(store: AnyStore, job_id: str, data: bytes, when: dt.datetime = T0) -> None:
    insert_document(
        store,
        {"_id": job_id, "next_run_time": when.timestamp(), "job_state": data, FORMAT_FIELD: store.format},
    )


def unresolvable_state(store: AnyStore, scheduler: BackgroundScheduler) -> bytes:
    """Valid bytes in the store's format whose callable no longer exists."""
    state = make_job(scheduler, "broken").__getstate__()
    state["func"] = "module_that_was_deleted:task"
    return store.serializer.dumps(state)


class TestUndecodableJobs:
    """Run on every adapter and serializer here, and on NX-27017 by test_nx.py."""

    @pytest.mark.parametrize("kind", ["garbage", "unresolvable"])
    def test_undecodable_job_is_quarantined_not_deleted(
        self,
        store: AnyStore,
        scheduler: BackgroundScheduler,
        kind: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        store.add_job(make_job(scheduler, "good", next_run_time=T0 + dt.timedelta(seconds=1)))
        data = b"\x00not a job\xff" if kind == "garbage" else unresolvable_state(store, scheduler)
        insert_broken(store, "broken", data)

        with caplog.at_level(logging.WARNING, logger="apscheduler.jobstores.default"):
            due = store.get_due_jobs(T0 + dt.timedelta(minutes=1))
        assert [job.id for job in due] == ["good"]
        assert any("broken" in record.getMessage() and "quarantined" in record.getMessage()
                   for record in caplog.records)  # fmt: skip

        document = find_document(store, "broken")
        assert document is not None, "the broken job was deleted"
        assert document["job_state"] == data
        assert "next_run_time" not in document
        record = document[QUARANTINE_FIELD]
        assert record["format"] == store.format
        assert record["next_run_time"] == T0.timestamp()
        assert "broken" in record["message"]
        assert record["error_type"] == "jobshelf.DeserializationError"
        if kind == "unresolvable":
            assert "module_that_was_deleted" in record["message"]
        assert isinstance(record["at"], dt.datetime)

        # out of the schedule from now on
        assert store.get_next_run_time() == T0 + dt.timedelta(seconds=1)
        assert [job.id for job in store.get_all_jobs()] == ["good"]
        assert store.lookup_job("broken") is None
        assert store.get_due_jobs(T0 + dt.timedelta(days=1))[0].id == "good"


def test_lookup_quarantines_too(store: AnyStore) -> None:
    insert_broken(store, "broken", b"garbage")
    assert store.lookup_job("broken") is None
    assert QUARANTINE_FIELD in find_document(store, "broken")  # type: ignore[operator]
    assert store.get_next_run_time() is None


def test_remove_all_keeps_quarantined_jobs_and_remove_job_deletes_them(
    store: AnyStore, scheduler: BackgroundScheduler
) -> None:
    store.add_job(make_job(scheduler, "good"))
    insert_broken(store, "broken", b"garbage")
    store.get_all_jobs()
    store.remove_all_jobs()
    assert document_ids(store) == ["broken"]
    store.remove_job("broken")
    assert document_ids(store) == []


def test_replacing_a_quarantined_job_releases_it(store: AnyStore, scheduler: BackgroundScheduler) -> None:
    insert_broken(store, "broken", b"garbage")
    store.get_all_jobs()
    scheduler.add_jobstore(store, "restore")
    replacement = make_job(scheduler, "broken", next_run_time=T0)
    store.update_job(replacement)  # what add_job(replace_existing=True) does after a conflict
    document = find_document(store, "broken")
    assert document is not None
    assert QUARANTINE_FIELD not in document
    assert document["next_run_time"] == T0.timestamp()
    assert [job.id for job in store.get_due_jobs(T0)] == ["broken"]


def test_stock_pickle_with_missing_class_is_kept(make_store: Any, scheduler: BackgroundScheduler) -> None:
    store = make_store()
    store.start(scheduler, "default")
    data = pickle.dumps({"version": 1, "id": "x"}).replace(b"builtins", b"nomodule")
    insert_document(store, {"_id": "x", "next_run_time": T0.timestamp(), "job_state": data})
    assert store.get_due_jobs(T0) == []
    assert find_document(store, "x")[QUARANTINE_FIELD]["format"] == "pickle"  # type: ignore[index]
