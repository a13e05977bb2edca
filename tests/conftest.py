from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from jobshelf import MongoDBJobStore, available_serializers

#: Every serializer the store tests run on: the built-ins and the examples in serializers/
#: (``make test`` installs them; a bare ``pytest`` without them runs the built-ins).
SERIALIZERS = ["pickle", "cloudpickle", "msgpack"] + [
    name for name in ("json", "zlib+msgpack") if name in available_serializers()
]


@pytest.fixture(params=SERIALIZERS)
def serializer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(
    mongo_client: MongoClient[Any], database: str, serializer: str, scheduler: BackgroundScheduler
) -> Iterator[MongoDBJobStore]:
    jobstore = MongoDBJobStore(database=database, client=mongo_client, serializer=serializer)
    jobstore.start(scheduler, "default")
    yield jobstore
    jobstore.shutdown()
