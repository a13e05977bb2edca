"""Format tags, ``accept``, the refusal to start on unaccepted formats, and lazy migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MongoDBJobStore, MsgpackStateSerializer, UnacceptedFormatError
from jobshelf.mongodb import FORMAT_FIELD, QUARANTINE_FIELD

from .helpers import UTC, assert_same_job, make_job

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def make_store(mongo_client: MongoClient[Any], database: str, scheduler: BackgroundScheduler) -> Any:
    def make(serializer: Any = None, start: bool = True, **options: Any) -> MongoDBJobStore:
        store = MongoDBJobStore(database=database, client=mongo_client, serializer=serializer, **options)
        if start:
            store.start(scheduler, "default")
        return store

    return make


def fill(store: Any, scheduler: BackgroundScheduler, *ids: str) -> list[Any]:
    added = [make_job(scheduler, job_id, next_run_time=T0, args=(job_id,)) for job_id in ids]
    for job in added:
        store.add_job(job)
    return added


def test_start_refuses_unaccepted_formats_and_changes_nothing(
    make_store: Any, scheduler: BackgroundScheduler, mongo_client: MongoClient[Any], database: str
) -> None:
    stock = StockStore(database=database, client=mongo_client)
    fill(stock, scheduler, "s1", "s2")
    fill(make_store("cloudpickle"), scheduler, "c1")
    before = sorted(mongo_client[database].jobs.find(), key=lambda doc: doc["_id"])

    store = make_store("msgpack", start=False)
    with pytest.raises(UnacceptedFormatError) as info:
        store.start(scheduler, "default")
    message = str(info.value)
    assert "'pickle' (2 jobs)" in message
    assert "'cloudpickle' (1 job)" in message
    assert "accept=['cloudpickle', 'msgpack', 'pickle']" in message
    assert info.value.counts == {"pickle": 2, "cloudpickle": 1}
    assert sorted(mongo_client[database].jobs.find(), key=lambda doc: doc["_id"]) == before


def test_accept_reads_other_formats_and_updates_migrate(
    make_store: Any, scheduler: BackgroundScheduler, mongo_client: MongoClient[Any], database: str
) -> None:
    originals = fill(StockStore(database=database, client=mongo_client), scheduler, "a", "b")
    store = make_store("msgpack", accept=["msgpack", "pickle"])
    assert store.accepted_formats == {"msgpack", "pickle"}
    for job in originals:
        assert_same_job(job, store.lookup_job(job.id))

    job = store.lookup_job("a")
    store.update_job(job)
    document = store.collection.find_one({"_id": "a"})
    assert document[FORMAT_FIELD] == "msgpack"
    assert MsgpackStateSerializer().loads(document["job_state"])["args"] == ("a",)
    assert store.format_counts() == {"msgpack": 1, "pickle": 1}
    assert_same_job(originals[0], store.lookup_job("a"))


def test_each_document_is_read_with_the_serializer_that_wrote_it(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    expected = []
    for name in ("pickle", "cloudpickle", "msgpack"):
        expected += fill(make_store(name, start=False), scheduler, f"{name}-job")
    reader = make_store("msgpack", accept=["pickle", "cloudpickle", "msgpack"])
    jobs = {job.id: job for job in reader.get_all_jobs()}
    assert sorted(jobs) == ["cloudpickle-job", "msgpack-job", "pickle-job"]
    for job in expected:
        assert_same_job(job, jobs[job.id])


def test_pickle_family_accepts_untagged_stock_documents_by_default(
    make_store: Any, scheduler: BackgroundScheduler, mongo_client: MongoClient[Any], database: str
) -> None:
    fill(StockStore(database=database, client=mongo_client), scheduler, "stock")
    for name in ("pickle", "cloudpickle"):
        store = make_store(name)
        assert "pickle" in store.accepted_formats
        assert [job.id for job in store.get_due_jobs(T0)] == ["stock"]


def test_foreign_formats_written_after_start_are_left_alone(
    make_store: Any, scheduler: BackgroundScheduler
) -> None:
    pickle_store = make_store("pickle")
    fill(pickle_store, scheduler, "mine")
    fill(make_store("msgpack", accept=["msgpack", "pickle"]), scheduler, "foreign")
    assert [job.id for job in pickle_store.get_due_jobs(T0)] == ["mine"]
    assert [job.id for job in pickle_store.get_all_jobs()] == ["mine"]
    assert pickle_store.lookup_job("foreign") is None
    pickle_store.remove_all_jobs()
    document = pickle_store.collection.find_one({"_id": "foreign"})
    assert document is not None
    assert QUARANTINE_FIELD not in document
    assert pickle_store.get_next_run_time() is None


def test_accept_must_be_a_list(make_store: Any) -> None:
    with pytest.raises(TypeError, match=r"write accept=\['pickle'\]"):
        make_store("msgpack", accept="pickle")
