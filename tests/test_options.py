"""Configuration mistakes in jobshelf's own words, found before anything connects (issue 15, part 3)."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from jobshelf import MemoryJobStore, MongoDBJobStore

#: A port nothing listens on: a store that opened a client here would only fail later.
NOWHERE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100"


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("serialiser", "serializer"), ("acept", "accept"), ("allowed_callable", "allowed_callables"),
     ("leese", "lease"), ("max_state_byte", "max_state_bytes"), ("allow_by_values", "allow_by_value")],
)  # fmt: skip
def test_a_misspelt_option_is_named_with_its_right_spelling(typo: str, meant: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=rf"unknown option '{typo}'; did you mean '{meant}'\?"):
            MongoDBJobStore(host=NOWHERE, **{typo: "x"})
        if meant != "lease":  # a MongoDB option
            with pytest.raises(TypeError, match=rf"unknown option '{typo}'; did you mean '{meant}'\?"):
                MemoryJobStore(**{typo: "x"})
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []  # no client was opened


def test_mongoclient_options_still_reach_pymongo() -> None:
    store = MongoDBJobStore(
        host=NOWHERE, appname="jobshelf-test", serverSelectionTimeoutMS=100, tz_aware=True
    )
    try:
        assert store.client.options.pool_options.metadata["application"]["name"] == "jobshelf-test"
    finally:
        store.shutdown()


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("no", False), ("0", False),
                                                ("true", True), ("yes", True), ("1", True)])  # fmt: skip
def test_booleans_from_configuration_files_are_parsed(text: str, expected: bool) -> None:
    store = MongoDBJobStore(host=NOWHERE, shared=text)
    try:
        assert store.shared is expected
    finally:
        store.shutdown()


def test_numbers_from_configuration_files_are_parsed() -> None:
    store = MongoDBJobStore(host=NOWHERE, shared="true", lease="12.5", recheck="2", max_state_bytes="4096")
    try:
        assert (store.shared, store.max_state_bytes) == (True, 4096)
    finally:
        store.shutdown()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"shared": "maybe"}, "shared must be true or false, got 'maybe'"),
     ({"shared": True, "lease": "soon"}, "lease must be a number greater than 0 and at most 31536000, got '"),
     ({"shared": True, "lease": 0}, "lease must be a number greater than 0 and at most 31536000, got 0"),
     ({"shared": True, "lease": 0.5}, "lease must be at least 1 second, got 0.5: a claim must outlast"),
     ({"shared": True, "lease": 1e11}, "lease must be a number .* at most 31536000, got 100000000000.0"),
     ({"shared": True, "dead_after": "1e300"}, "dead_after must be a number .* at most"),
     ({"shared": True, "recheck": 10**12}, "recheck must be a number .* at most"),
     ({"shared": True, "recheck": float("nan")}, "recheck must be a number"),
     ({"lease": 10}, r"lease=10 applies to shared mode only; pass shared=True"),
     ({"lease": 30}, r"lease=30 applies to shared mode only"),  # the default value, given: still refused
     ({"recheck": 1, "shared": "false"}, r"recheck=1 applies to shared mode only"),
     ({"max_state_bytes": "lots"}, "max_state_bytes must be a whole number"),
     ({"allow_by_value": "perhaps"}, "allow_by_value must be true or false")],
)  # fmt: skip
def test_invalid_values_are_refused_before_connecting(options: dict[str, Any], message: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=message):
            MongoDBJobStore(host=NOWHERE, **options)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_the_plugin_alias_takes_string_options_from_a_configuration_file(
    mongodb_uri: str, database: str
) -> None:
    scheduler = BackgroundScheduler(
        gconfig={
            "apscheduler.jobstores.default.type": "jobshelf",
            "apscheduler.jobstores.default.host": mongodb_uri,
            "apscheduler.jobstores.default.database": database,
            "apscheduler.jobstores.default.shared": "false",
            "apscheduler.jobstores.default.serializer": "msgpack",
        }
    )
    scheduler.start(paused=True)
    try:
        scheduler.add_job(print, "interval", hours=1, id="hourly")
        store = MongoDBJobStore(host=mongodb_uri, database=database, serializer="msgpack")
        assert store.collection.find_one({"_id": "hourly"})["job_state_format"] == "msgpack"  # type: ignore[index]
        # a shared store indexes its leases at start: "false" did not turn shared mode on
        keys = [key for index in store.collection.list_indexes() for key in index["key"]]
        assert "next_run_time" in keys and not [key for key in keys if key.startswith("lease")], keys
        store.shutdown()
    finally:
        scheduler.shutdown(wait=False)
