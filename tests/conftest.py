from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MemoryJobStore, MemoryStorage, MongoDBJobStore, available_serializers

from .helpers import AnyStore, StoreFactory

#: Every serializer the store tests run on: the built-ins and the examples in serializers/
#: (``make test`` installs them; a bare ``pytest`` without them runs the built-ins).
SERIALIZERS = ["pickle", "cloudpickle", "msgpack"] + [
    name for name in ("json", "zlib+msgpack") if name in available_serializers()
]
ADAPTERS = ["mongodb", "memory"]


@pytest.fixture(params=SERIALIZERS)
def serializer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(adapter: str, mongo_client: MongoClient[Any], database: str) -> Iterator[StoreFactory]:
    """Build stores of the adapter under test; every MongoDB one shares the test's collection."""
    made: list[AnyStore] = []
    storage = MemoryStorage()  # one "collection" for every memory store of the test

    def factory(**options: Any) -> AnyStore:
        store: AnyStore
        if adapter == "memory":
            store = MemoryJobStore(storage=storage, **options)
        else:
            store = MongoDBJobStore(database=database, client=mongo_client, **options)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.shutdown()


@pytest.fixture
def store(make_store: StoreFactory, serializer: str, scheduler: BackgroundScheduler) -> AnyStore:
    jobstore = make_store(serializer=serializer)
    jobstore.start(scheduler, "default")
    return jobstore
