"""Serializers the resolution tests refer to by ``module:attr`` — good ones and broken ones."""

from __future__ import annotations

import json
import pickle
from typing import Any


class ReprSerializer:
    """Good: pickle under another format name."""

    format_name = "repr-pickle"

    def dumps(self, state: dict[str, Any], /) -> bytes:
        return pickle.dumps(state)

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return dict(pickle.loads(data))


INSTANCE = ReprSerializer()


class ReturnsStr:
    def dumps(self, state: dict[str, Any], /) -> str:
        return json.dumps({"id": state["id"]})

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return dict(json.loads(data))


def _listify(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_listify(item) for item in value]
    if isinstance(value, dict):
        return {key: _listify(item) for key, item in value.items()}
    return value


class TuplesBecomeLists:
    """Lossy: pickles the state after turning every tuple into a list."""

    def dumps(self, state: dict[str, Any], /) -> bytes:
        return pickle.dumps({**state, "args": _listify(state["args"]), "kwargs": _listify(state["kwargs"])})

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return dict(pickle.loads(data))


class NeedsArguments:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def dumps(self, state: dict[str, Any], /) -> bytes:
        return pickle.dumps(state)

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return dict(pickle.loads(data))


class NoLoads:
    def dumps(self, state: dict[str, Any], /) -> bytes:
        return b""
