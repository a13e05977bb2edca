from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import pytest
from apscheduler.triggers.cron import CronTrigger
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
