"""Every ``serializer=`` form, its format name, and the errors for bad ones."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import pytest

import jobshelf
from jobshelf import (
    CloudPickleSerializer,
    MongoDBJobStore,
    MsgpackStateSerializer,
    PickleSerializer,
    Serializer,
    SerializerConfigError,
    format_name,
    resolve_serializer,
)

from . import custom_serializers


@pytest.mark.parametrize(
    ("spec", "expected_type", "expected_format"),
    [
        (None, PickleSerializer, "pickle"),
        ("pickle", PickleSerializer, "pickle"),
        ("cloudpickle", CloudPickleSerializer, "cloudpickle"),
        ("msgpack", MsgpackStateSerializer, "msgpack"),
        (MsgpackStateSerializer, MsgpackStateSerializer, "msgpack"),
        (CloudPickleSerializer(2), CloudPickleSerializer, "cloudpickle"),
        ("jobshelf.serializers.msgpack:MsgpackStateSerializer", MsgpackStateSerializer, "msgpack"),
        ("tests.custom_serializers:INSTANCE", custom_serializers.ReprSerializer, "repr-pickle"),
        ("tests.custom_serializers:ReprSerializer", custom_serializers.ReprSerializer, "repr-pickle"),
    ],
)
def test_resolves_every_form(spec: Any, expected_type: type, expected_format: str) -> None:
    serializer = resolve_serializer(spec)
    assert type(serializer) is expected_type
    assert format_name(serializer) == expected_format
    assert isinstance(serializer, Serializer)


@pytest.mark.parametrize(("module", "expected_format"), [(pickle, "pickle"), (cloudpickle, "cloudpickle")])
def test_plain_modules_are_serializers(module: Any, expected_format: str) -> None:
    assert resolve_serializer(module) is module
    assert format_name(module) == expected_format
    assert MongoDBJobStore(serializer=module, connect=False).accepts(None)  # they read stock documents


def test_pickle_protocol_reaches_pickle_and_cloudpickle() -> None:
    serializer = resolve_serializer(None, pickle_protocol=2)
    assert isinstance(serializer, PickleSerializer)
    assert serializer.protocol == 2
    assert resolve_serializer("pickle", pickle_protocol=3).protocol == 3  # type: ignore[attr-defined]
    assert resolve_serializer("cloudpickle", pickle_protocol=4).protocol == 4  # type: ignore[attr-defined]
    store = MongoDBJobStore(serializer=CloudPickleSerializer, pickle_protocol=2, connect=False)
    assert store.serializer.protocol == 2  # type: ignore[attr-defined]


def test_pickle_protocol_with_another_serializer_is_an_error() -> None:
    with pytest.raises(
        SerializerConfigError, match=r"pickle_protocol=2 applies to the pickle and cloudpickle"
    ):
        resolve_serializer("msgpack", pickle_protocol=2)
    with pytest.raises(SerializerConfigError, match="drop pickle_protocol"):
        MongoDBJobStore(serializer=MsgpackStateSerializer(), pickle_protocol=2, connect=False)


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(SerializerConfigError) as info:
        resolve_serializer("yaml")
    message = str(info.value)
    assert "unknown serializer 'yaml'" in message
    for name in ("cloudpickle", "msgpack", "pickle"):
        assert name in message


def test_bad_references_say_what_is_wrong() -> None:
    with pytest.raises(SerializerConfigError, match="cannot import module 'no_such_module'"):
        resolve_serializer("no_such_module:Thing")
    with pytest.raises(SerializerConfigError, match="has no attribute 'Missing'"):
        resolve_serializer("tests.custom_serializers:Missing")


def test_object_without_loads_is_rejected() -> None:
    with pytest.raises(SerializerConfigError, match=r"no callable dumps\(\)/loads\(\)"):
        resolve_serializer(custom_serializers.NoLoads())
    with pytest.raises(SerializerConfigError, match="no callable"):
        resolve_serializer(42)  # type: ignore[arg-type]


def test_class_that_needs_arguments_says_pass_an_instance() -> None:
    with pytest.raises(SerializerConfigError, match="could not be instantiated without arguments"):
        resolve_serializer(custom_serializers.NeedsArguments)
    instance = custom_serializers.NeedsArguments(b"k")
    assert resolve_serializer(instance) is instance


def test_serializer_returning_str_fails_at_construction() -> None:
    with pytest.raises(SerializerConfigError, match=r"dumps\(\) returned str, expected bytes"):
        MongoDBJobStore(serializer=custom_serializers.ReturnsStr(), connect=False)


def test_lossy_serializer_fails_at_construction_with_the_path() -> None:
    with pytest.raises(SerializerConfigError) as info:
        MongoDBJobStore(serializer="tests.custom_serializers:TuplesBecomeLists", connect=False)
    assert "state['args']: expected tuple" in str(info.value)
    assert "got list" in str(info.value)


def test_errors_are_chained() -> None:
    with pytest.raises(SerializerConfigError) as info:
        resolve_serializer(custom_serializers.ReturnsStr())
    assert info.value.__cause__ is not None


def test_available_serializers_includes_builtins() -> None:
    names = jobshelf.available_serializers()
    assert {"pickle", "cloudpickle", "msgpack"} <= set(names)
    assert names["msgpack"] == "jobshelf.serializers.msgpack:MsgpackStateSerializer"
