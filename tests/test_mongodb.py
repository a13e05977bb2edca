"""What only the MongoDB adapter does: documents, indexes, clients, the plugin alias."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient
from pymongo.errors import InvalidOperation

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD, REVISION_FIELD

from .helpers import UTC, at, make_job


@pytest.fixture
def adapter() -> str:
    return "mongodb"


class TestDocuments:
    def test_document_layout(
        self, store: MongoDBJobStore, scheduler: BackgroundScheduler, serializer: str
    ) -> None:
        store.add_job(make_job(scheduler, "a", next_run_time=at(0)))
        store.add_job(make_job(scheduler, "p", next_run_time=None))
        documents = {doc["_id"]: doc for doc in store.collection.find()}
        assert set(documents["a"]) == {"_id", "next_run_time", "job_state", FORMAT_FIELD, REVISION_FIELD}
        assert isinstance(documents["a"][REVISION_FIELD], int)
        assert documents["a"]["next_run_time"] == at(0).timestamp()
        assert isinstance(documents["a"]["job_state"], str if serializer == "json" else bytes)
        assert documents["a"][FORMAT_FIELD] == serializer
        assert documents["p"]["next_run_time"] is None

    def test_start_creates_sparse_next_run_time_index(self, store: MongoDBJobStore) -> None:
        indexes = store.collection.index_information()
        matching = [info for info in indexes.values() if info["key"] == [("next_run_time", 1)]]
        assert matching, indexes
        assert matching[0].get("sparse") is True


def test_constructor_rejects_empty_names_like_the_stock_store() -> None:
    with pytest.raises(ValueError, match='The "database" parameter must not be empty'):
        MongoDBJobStore(database="")
    with pytest.raises(ValueError, match='The "collection" parameter must not be empty'):
        MongoDBJobStore(collection="")


def test_connect_args_reach_mongoclient_with_w1_default(mongodb_uri: str) -> None:
    store = MongoDBJobStore(host=mongodb_uri, appname="jobshelf-test")
    try:
        assert store.client.write_concern.document == {"w": 1}
        assert store.client.options.pool_options.metadata["application"]["name"] == "jobshelf-test"
    finally:
        store.shutdown()


SHARED_CLIENT: Any = None


def test_client_may_be_a_module_reference(mongo_client: MongoClient[Any], database: str) -> None:
    global SHARED_CLIENT  # noqa: PLW0603 - the reference must name a module attribute
    SHARED_CLIENT = mongo_client
    store = MongoDBJobStore(database=database, client=f"{__name__}:SHARED_CLIENT")
    assert store.client is mongo_client


def test_shutdown_closes_only_a_client_it_created(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    borrowed = MongoDBJobStore(database=database, client=mongo_client)
    borrowed.shutdown()
    assert mongo_client[database].command("ping")["ok"] == 1

    owned = MongoDBJobStore(database=database, host=mongodb_uri)
    owned.collection.find_one()
    owned.shutdown()
    with pytest.raises(InvalidOperation):
        owned.collection.find_one()


def test_plugin_alias_in_dict_configuration(
    mongodb_uri: str, mongo_client: MongoClient[Any], database: str
) -> None:
    ran = threading.Event()
    EVENTS["tick"] = ran
    scheduler = BackgroundScheduler(
        timezone=UTC,
        jobstores={
            "default": {
                "type": "jobshelf",
                "serializer": "pickle",
                "database": database,
                "host": mongodb_uri,
            }
        },
    )
    scheduler.start()
    try:
        scheduler.add_job(
            _set_event,
            "interval",
            seconds=3600,
            id="tick",
            next_run_time=dt.datetime.now(UTC),
            args=[f"{__name__}:EVENTS", "tick"],
        )
        assert ran.wait(20), "the job stored through the plugin alias did not run"
        # jobshelf's document (the stock store writes no format field) in the configured database
        document = mongo_client[database]["jobs"].find_one({"_id": "tick"})
        assert document is not None
        assert document[FORMAT_FIELD] == "pickle"
        assert pickle.loads(document["job_state"])["id"] == "tick"
    finally:
        scheduler.shutdown(wait=False)


EVENTS: dict[str, threading.Event] = {}


def _set_event(_ref: str, key: str) -> None:
    EVENTS[key].set()
