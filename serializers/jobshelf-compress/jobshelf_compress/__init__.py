"""A wrapper serializer: compresses what another serializer writes, above a size threshold.

It shows how to layer behaviour on any serializer — the same shape fits encryption or signing:
resolve the inner serializer once, call it, transform its bytes, and name the combined format so
stores can tell it apart (``zlib+msgpack``). Small states are stored uncompressed (one flag byte
says which), because zlib's header costs more than it saves on a few hundred bytes.
"""

from __future__ import annotations

import zlib
from typing import Any

from jobshelf import DeserializationError, SerializerSpec, format_name, resolve_serializer

__all__ = ["MAX_DECOMPRESSED", "CompressedSerializer", "ZlibMsgpack", "ZlibPickle"]

_RAW, _ZLIB = b"\x00", b"\x01"
#: The most a stored state may decompress to (a MongoDB document holds at most 16 MiB).
MAX_DECOMPRESSED = 16 * 1024 * 1024


class CompressedSerializer:
    """zlib around ``inner``.

    :param inner: any ``serializer=`` spec (name, instance, class, ``module:attr``)
    :param threshold: states of at least this many bytes are compressed
    :param level: zlib compression level (1 fastest .. 9 smallest)
    """

    def __init__(self, inner: SerializerSpec = "msgpack", threshold: int = 512, level: int = 6) -> None:
        if threshold < 0 or not 0 <= level <= 9:
            raise ValueError(f"threshold must be >= 0 and level 0..9, got {threshold}, {level}")
        self.inner = resolve_serializer(inner)
        self.threshold = threshold
        self.level = level
        self.format_name = f"zlib+{format_name(self.inner)}"
        self.pickle_family = False
        self.stores_callables_by_value = bool(getattr(self.inner, "stores_callables_by_value", False))

    def dumps(self, state: dict[str, Any], /) -> bytes:
        data = self.inner.dumps(state)
        if len(data) < self.threshold:
            return _RAW + data
        return _ZLIB + zlib.compress(data, self.level)

    def loads(self, data: bytes, /) -> dict[str, Any]:
        flag, body = data[:1], data[1:]
        if flag == _ZLIB:
            inflater = zlib.decompressobj()
            try:
                body = inflater.decompress(body, MAX_DECOMPRESSED)  # never more than the bound
            except zlib.error as exc:
                raise DeserializationError(f"{self.format_name}: corrupt zlib data: {exc}") from exc
            if inflater.unconsumed_tail:
                raise DeserializationError(
                    f"{self.format_name}: the data decompresses to more than {MAX_DECOMPRESSED} bytes"
                )
        elif flag != _RAW:
            raise DeserializationError(f"{self.format_name}: unknown flag byte {flag!r}")
        return self.inner.loads(body)

    def __repr__(self) -> str:
        return f"CompressedSerializer({self.inner!r}, threshold={self.threshold}, level={self.level})"


class ZlibMsgpack(CompressedSerializer):
    """``zlib+msgpack``: registered by name, constructible without arguments."""

    def __init__(self) -> None:
        super().__init__("msgpack")


class ZlibPickle(CompressedSerializer):
    """``zlib+pickle``."""

    def __init__(self) -> None:
        super().__init__("pickle")
