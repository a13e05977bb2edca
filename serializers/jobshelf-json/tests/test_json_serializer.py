from __future__ import annotations

import contextlib
import datetime as dt
import json
import zoneinfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobshelf_json import JsonStateSerializer

from jobshelf import MongoDBJobStore, resolve_serializer
from jobshelf.testing import check_serializer, sample_state


def test_passes_the_conformance_kit() -> None:
    check_serializer("json")


def test_selected_by_name_through_its_entry_point() -> None:
    assert isinstance(resolve_serializer("json"), JsonStateSerializer)
    assert MongoDBJobStore(serializer="json", connect=False).format == "json"


def test_output_is_readable_json() -> None:
    state = sample_state()
    state["trigger"] = CronTrigger(day_of_week="mon-fri", hour=9, timezone="Europe/Berlin")
    state["next_run_time"] = dt.datetime(2030, 1, 1, 9, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    document = json.loads(JsonStateSerializer().dumps(state))
    assert document["id"] == "jobshelf-self-check"
    assert document["trigger"]["$trigger"][0] == "cron"
    assert document["trigger"]["$trigger"][1] == {"$zoneinfo": "Europe/Berlin"}
    assert document["next_run_time"] == {
        "$datetime": [2030, 1, 1, 9, 0, 0, 0, 0, {"$zoneinfo": "Europe/Berlin"}]
    }
    assert document["args"] == {"$tuple": [1, "two", [3.5, None]]}


def test_dollar_keys_cannot_be_confused_with_encoded_values() -> None:
    state = sample_state()
    state["kwargs"] = {"$tuple": [1, 2], "$bytes": "AA=="}
    restored = JsonStateSerializer().loads(JsonStateSerializer().dumps(state))
    assert restored["kwargs"] == {"$tuple": [1, 2], "$bytes": "AA=="}


def test_stored_as_a_string_in_mongodb(mongo_client, database, scheduler) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import assert_same_job, make_job

    store = MongoDBJobStore(database=database, client=mongo_client, serializer="json")
    store.start(scheduler, "default")
    job = make_job(scheduler, "readable", args=(1, (2, 3)))
    store.add_job(job)
    document = store.collection.find_one({"_id": "readable"})
    assert isinstance(document["job_state"], str)
    assert json.loads(document["job_state"])["id"] == "readable"
    assert_same_job(job, store.lookup_job("readable"))


def test_garbage_is_refused() -> None:
    from jobshelf import DeserializationError
    from jobshelf.testing import load_state

    with pytest.raises(DeserializationError):
        load_state(JsonStateSerializer(), b'{"$nosuchkind": 1}')


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.just({"$tuple": []}),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["$tuple", "$zoneinfo", "$trigger", "$map", "id", "$int"]),
                    inner,
                    max_size=3,
                )
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
        st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    )
)
def test_decoding_fuzzed_input_raises_only_deserialization_error(data: bytes) -> None:
    from jobshelf import DeserializationError
    from jobshelf.testing import load_state

    with contextlib.suppress(DeserializationError):  # anything else escaping fails the test
        load_state(JsonStateSerializer(), data)
