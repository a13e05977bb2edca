from __future__ import annotations

import zlib

import pytest
from jobshelf_compress import MAX_DECOMPRESSED, CompressedSerializer, ZlibMsgpack

from jobshelf import DeserializationError, MongoDBJobStore
from jobshelf.testing import check_serializer, load_state, sample_state


@pytest.mark.parametrize("name", ["zlib+msgpack", "zlib+pickle"])
def test_passes_the_conformance_kit(name: str) -> None:
    check_serializer(name)


def test_compressed_path_passes_too() -> None:
    check_serializer(CompressedSerializer("msgpack", threshold=0), max_examples=30)


def test_threshold_decides_and_a_flag_byte_says_which() -> None:
    state = sample_state()
    assert CompressedSerializer("msgpack", threshold=10_000).dumps(state)[:1] == b"\x00"
    assert CompressedSerializer("msgpack", threshold=0).dumps(state)[:1] == b"\x01"
    state["kwargs"] = {"blob": "x" * 5000}
    big = ZlibMsgpack().dumps(state)
    assert big[:1] == b"\x01"
    assert len(big) < 200


def test_format_names_the_layers_and_stores_keep_them_apart() -> None:
    store = MongoDBJobStore(serializer="zlib+msgpack", connect=False)
    assert store.format == "zlib+msgpack"
    assert store.accepted_formats == {"zlib+msgpack"}


def test_corrupt_data_is_refused() -> None:
    with pytest.raises(DeserializationError, match="corrupt zlib data"):
        load_state(ZlibMsgpack(), b"\x01not zlib")
    with pytest.raises(DeserializationError, match="unknown flag"):
        load_state(ZlibMsgpack(), b"\x07")


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = b"\x01" + zlib.compress(b"\x00" * (MAX_DECOMPRESSED + 1), 9)
    assert len(bomb) < 40_000
    with pytest.raises(DeserializationError, match="decompresses to more than"):
        load_state(ZlibMsgpack(), bomb)
