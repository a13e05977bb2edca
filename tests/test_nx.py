"""The contract, once more, on NX-27017: a second, independent wire-protocol server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from tests import servers

from . import test_quarantine as quarantine
from . import test_store_contract as contract

pytestmark = pytest.mark.nx


@pytest.fixture(scope="module")
def nx_client() -> Iterator[MongoClient[Any]]:
    try:
        server = servers.nx_server()
        uri = server.__enter__()
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        pytest.skip(f"NX-27017 could not start here: {exc}")
    client: MongoClient[Any] = MongoClient(uri)
    try:
        yield client
    finally:
        client.close()
        server.__exit__(None, None, None)


class OnNX:
    """Fixtures that move a test class from this suite onto NX-27017 (MongoDB adapter, pickle)."""

    @pytest.fixture
    def adapter(self) -> str:
        return "mongodb"

    @pytest.fixture
    def mongo_client(self, nx_client: MongoClient[Any]) -> MongoClient[Any]:
        return nx_client

    @pytest.fixture(params=["pickle"])
    def serializer(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


class TestContractOnNX(OnNX, contract.TestContract):
    """APScheduler's contract, every test of test_store_contract.py."""


class TestUndecodableJobsOnNX(OnNX, quarantine.TestUndecodableJobs):
    """Quarantine instead of deletion (NX-27017 cannot match binary values in filters)."""


def test_start_creates_the_next_run_time_index_on_nx(
    nx_client: MongoClient[Any], database: str, scheduler: Any
) -> None:
    """NX-27017 accepts ``sparse=True`` but does not report index options: check the key."""
    from jobshelf import MongoDBJobStore

    store = MongoDBJobStore(database=database, client=nx_client)
    store.start(scheduler, "default")
    indexes = store.collection.index_information()
    assert [info for info in indexes.values() if info["key"] == [("next_run_time", 1)]], indexes
