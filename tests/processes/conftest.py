"""Tests that run real scheduler processes (and web servers) against a server: each test gets a
fresh SecantusDB in a process of its own (or ``JOBSHELF_MONGODB_URI``), so that what it measures
(takeovers within seconds, every fire time run) depends neither on a server that already served
the rest of the suite nor on the test process sharing that server's interpreter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from tests import servers


@pytest.fixture
def mongodb_uri() -> Iterator[str]:
    with servers.mongodb_uri(own_process=True) as uri:
        yield uri


@pytest.fixture
def mongo_client(mongodb_uri: str) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(mongodb_uri)
    yield client
    client.close()
