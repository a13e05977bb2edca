"""``pickle``: byte-compatible with APScheduler's stock ``MongoDBJobStore``."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from .._exceptions import SerializationError
from .._serializer import decode_with
from ._restricted import restricted_loads

__all__ = ["PickleSerializer", "pickle_protocol"]


def pickle_protocol(value: Any) -> int:
    """The protocol number :func:`pickle.dumps` would use for ``value``, or a clear error.

    Like pickle: a negative int means :data:`pickle.HIGHEST_PROTOCOL` and ``None`` means
    :data:`pickle.DEFAULT_PROTOCOL`. Unlike pickle, ``True``/``False`` are refused: they are ints
    to Python, but never what anyone meant by a protocol.
    """
    if value is None:
        return pickle.DEFAULT_PROTOCOL
    if type(value) is not int or value > pickle.HIGHEST_PROTOCOL:
        raise ValueError(
            f"pickle protocol must be an int up to {pickle.HIGHEST_PROTOCOL} (negative: the highest; "
            f"None: the default {pickle.DEFAULT_PROTOCOL}), got {value!r}"
        )
    return pickle.HIGHEST_PROTOCOL if value < 0 else value


class PickleSerializer:
    """Pickles the job state exactly as the stock store does.

    ``dumps(state)`` is ``pickle.dumps(state, protocol)``, byte for byte, so documents written
    with it are read by APScheduler's own ``MongoDBJobStore`` and the other way round.

    :param protocol: pickle protocol, as :func:`pickle.dumps` takes it (default:
        :data:`pickle.HIGHEST_PROTOCOL`, as the stock store)
    """

    format_name = "pickle"
    pickle_family = True
    stores_callables_by_value = False
    decoding_runs_code = True

    def __init__(self, protocol: int | None = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = pickle_protocol(protocol)

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Pickle ``state`` at the configured protocol."""
        try:
            return pickle.dumps(state, self.protocol)
        except Exception as exc:
            raise SerializationError(
                f"{self.format_name} cannot encode the job state: {type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Unpickle ``data`` (any protocol; stock documents included)."""
        return decode_with(self.format_name, pickle.loads, data)

    def loads_restricted(self, data: bytes, allows_global: Callable[[str, str], bool], /) -> dict[str, Any]:
        """Unpickle ``data`` admitting only job-state classes (datetimes, zones, built-in and
        registered triggers) and the globals ``allows_global(module, name)`` allows.

        Stores call this instead of :meth:`loads` when ``allowed_callables`` is set.
        """
        return decode_with(self.format_name, lambda payload: restricted_loads(payload, allows_global), data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(protocol={self.protocol})"
