"""Fixtures shared by tests/ and the example serializers' tests: real servers, clients, databases."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import MongoClient

from tests import servers
from jobshelf.testing import load_profile

load_profile()


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """``JOBSHELF_MONGODB_URI`` when set (a real mongod), else an embedded SecantusDB."""
    with servers.mongodb_uri() as uri:
        yield uri


@pytest.fixture(scope="session")
def mongo_client(mongodb_uri: str) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(mongodb_uri)
    yield client
    client.close()


@pytest.fixture
def database(mongo_client: MongoClient[Any]) -> Iterator[str]:
    """A fresh database name per test, dropped afterwards."""
    name = f"jobshelf_test_{uuid.uuid4().hex[:12]}"
    yield name
    mongo_client.drop_database(name)


@pytest.fixture
def scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone=dt.timezone.utc)
