"""A human-readable JSON serializer for jobshelf, written the way a user would write one.

It builds on jobshelf's public state-marshalling API (:class:`jobshelf.StateMarshaller`): the
marshaller says how a datetime, a zone, a tuple or a trigger becomes plain data; this module only
decides how that plain data looks in JSON. A value the marshaller reduces to ``(kind, payload)``
is written as ``{"$kind": payload}``::

    {"version": 1, "id": "report", "func": "app.jobs:report",
     "trigger": {"$trigger": ["cron", {"$zoneinfo": "Europe/Berlin"}, null, null,
                              ["*", "*", "*", "*", "mon-fri", "9", "0", "0"], 207, null]},
     "args": {"$tuple": []}, ...}

The document's ``job_state`` is stored as a string (``text = True``), so any MongoDB tool shows it.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from jobshelf import DeserializationError, SerializationError, StateMarshaller, UnsupportedValueError

__all__ = ["JsonStateSerializer"]

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class JsonStateSerializer:
    """Job state as JSON text. Decoding, like msgpack-state's, imports nothing.

    :param indent: pretty-print with this indent (None: compact)
    """

    format_name = "json"
    text = True  # the bytes are UTF-8 JSON: stores may keep them as a string
    decoding_runs_code = False  # like msgpack-state: only known kinds are built

    def __init__(self, indent: int | None = None) -> None:
        self._marshaller = StateMarshaller(format_name="json")
        self._indent = indent

    def dumps(self, state: dict[str, Any], /) -> bytes:
        try:
            plain = self._to_json(state)
        except UnsupportedValueError:
            located = self._marshaller.find_unsupported(state)
            raise located or SerializationError("json cannot encode the job state") from None
        return json.dumps(plain, ensure_ascii=False, indent=self._indent, allow_nan=False).encode()

    def loads(self, data: bytes, /) -> dict[str, Any]:
        try:
            state = json.loads(data, object_hook=self._from_json)
        except DeserializationError:
            raise
        except Exception as exc:
            raise DeserializationError(f"json cannot decode the job state: {exc}") from exc
        if not isinstance(state, dict):
            raise DeserializationError(f"json data holds {type(state).__name__}, not a job state")
        return state

    def _to_json(self, value: Any) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if kind is list:
            return [self._to_json(item) for item in value]
        if kind is dict:
            if all(type(key) is str and not key.startswith("$") for key in value):
                return {key: self._to_json(item) for key, item in value.items()}
            return {"$map": [[self._to_json(key), self._to_json(item)] for key, item in value.items()]}
        if kind is bytes:
            return {"$bytes": base64.b64encode(value).decode("ascii")}
        reduced_kind, payload = self._marshaller.reduce(value)
        return {f"${reduced_kind}": self._to_json(payload)}

    def _from_json(self, obj: dict[str, Any]) -> Any:
        if len(obj) != 1:
            return obj
        ((key, payload),) = obj.items()
        if not key.startswith("$"):
            return obj
        kind = key[1:]
        if kind == "map":
            return {_hashable(pair[0]): pair[1] for pair in payload}
        if kind == "bytes":
            return base64.b64decode(payload, validate=True)
        if kind == "float":
            return _NON_FINITE[payload]
        return self._marshaller.construct(kind, payload)

    def __repr__(self) -> str:
        return "JsonStateSerializer()"


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # JSON has no tuples; a list key can only have been a tuple
        raise DeserializationError("a map key decoded to a list")
    return key
