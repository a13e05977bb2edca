from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from hypothesis import HealthCheck, settings
from pymongo import MongoClient

from jobshelf import MongoDBJobStore
from jobshelf.testing import servers

settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    print_blob=True, derandomize=False,
)  # fmt: skip
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

UTC = dt.timezone.utc
#: Every serializer the store tests run on; later formats plug in here.
SERIALIZERS = ["pickle", "cloudpickle", "msgpack"]


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    with servers.mongodb_uri() as uri:
        yield uri


@pytest.fixture(scope="session")
def mongo_client(mongodb_uri: str) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(mongodb_uri)
    yield client
    client.close()


@pytest.fixture
def database(mongo_client: MongoClient[Any]) -> Iterator[str]:
    name = f"jobshelf_test_{uuid.uuid4().hex[:12]}"
    yield name
    mongo_client.drop_database(name)


@pytest.fixture(params=SERIALIZERS)
def serializer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone=UTC)


@pytest.fixture
def store(
    mongo_client: MongoClient[Any], database: str, serializer: str, scheduler: BackgroundScheduler
) -> Iterator[MongoDBJobStore]:
    jobstore = MongoDBJobStore(database=database, client=mongo_client, serializer=serializer)
    jobstore.start(scheduler, "default")
    yield jobstore
    jobstore.shutdown()
