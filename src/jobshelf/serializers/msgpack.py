"""``msgpack``: job state as plain data (msgpack-state); compact, and decoding runs no code."""

from __future__ import annotations

import datetime as dt
import struct
import threading
from typing import Any

import msgpack

from .._exceptions import DeserializationError, SerializationError
from ._marshal import StateMarshaller, TriggerCodec, default_marshaller, fixed_offset_args

__all__ = ["EXT_CODES", "STATE_KEYS", "MsgpackStateSerializer"]

#: A job state with exactly these keys is stored as an array of their values, in this order.
STATE_KEYS = (
    "version", "id", "func", "trigger", "executor", "args", "kwargs", "name",
    "misfire_grace_time", "coalesce", "max_instances", "next_run_time",
)  # fmt: skip
_STATE_KEYS_SET = frozenset(STATE_KEYS)

#: msgpack ext type code of each value kind (see the README's "msgpack-state schema").
EXT_CODES: dict[str, int] = {
    "tuple": 1,
    "set": 2,
    "frozenset": 3,
    "int": 4,
    "decimal": 5,
    "uuid": 6,
    "datetime": 7,
    "date": 8,
    "time": 9,
    "timedelta": 10,
    "timezone": 11,
    "zoneinfo": 12,
    "pytz": 13,
    "trigger": 14,
}
_KINDS_BY_CODE = {code: kind for kind, code in EXT_CODES.items()}
_ZONE_CODES = frozenset((EXT_CODES["zoneinfo"], EXT_CODES["pytz"], EXT_CODES["timezone"]))
_CACHE_LIMIT = 1024
# msgpack.ExtType is a namedtuple whose __new__ re-validates in Python (about 1 us a call); the
# values built here are valid by construction, so build the tuple directly (about 0.2 us).
_ExtType = msgpack.ExtType
_new_ext = tuple.__new__
_DATETIME = EXT_CODES["datetime"]
_TUPLE = EXT_CODES["tuple"]
_EMPTY_ARRAY = b"\x90"
#: datetime ext payload: year, month, day, hour, minute, second, microsecond, fold (big-endian),
#: followed by the zone as one packed msgpack value (absent for a naive datetime)
_DATETIME_FIELDS = struct.Struct(">HBBBBBIB")


def _zone_key(zone: dt.tzinfo) -> Any:
    # datetime.timezone hashes and compares by offset only: its name must be part of the key
    if type(zone) is dt.timezone:
        return fixed_offset_args(zone)
    return zone


class MsgpackStateSerializer:
    """Encodes job state as msgpack, with msgpack ext types for everything msgpack lacks.

    Round trips are exact: tuples stay tuples, datetimes keep their microseconds, ``fold`` and
    zone (a zoneinfo zone stays zoneinfo, a pytz zone stays pytz with the same offset variant),
    dict keys may be any supported value, and ints of any size survive. Decoding imports nothing and
    builds only the types msgpack-state knows plus registered triggers, so a stored job cannot
    make the scheduler run code it did not already have.

    :param triggers: extra custom trigger codecs for this serializer only (see also
        :func:`jobshelf.register_trigger`, which reaches every serializer)
    """

    format_name = "msgpack"
    pickle_family = False
    stores_callables_by_value = False

    def __init__(self, *, triggers: tuple[TriggerCodec, ...] = ()) -> None:
        self._marshaller: StateMarshaller = default_marshaller()
        for codec in triggers:
            self._marshaller.add_trigger(codec)
        self._local = threading.local()  # per thread: one reusable Packer per nesting depth
        self._zone_bytes: dict[Any, bytes] = {}  # zone -> its packed ext, for datetime payloads
        self._zones: dict[tuple[int, bytes], Any] = {}  # (code, payload) -> zone

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Encode ``state``. :raises UnsupportedValueError: with the path to the value."""
        try:
            if state.keys() == _STATE_KEYS_SET:
                return self._pack([state[key] for key in STATE_KEYS])
            return self._pack(state)
        except Exception as exc:
            located = self._marshaller.find_unsupported(state)
            if located is not None:
                raise located from exc
            raise SerializationError(
                f"msgpack-state cannot encode the job state: {type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Decode ``data``. :raises DeserializationError: on anything but msgpack-state data."""
        try:
            state = msgpack.unpackb(data, ext_hook=self._ext_hook, strict_map_key=False)
        except DeserializationError:
            raise
        except Exception as exc:
            raise DeserializationError(
                f"msgpack-state cannot decode the job state: {type(exc).__name__}: {exc}"
            ) from exc
        if type(state) is list and len(state) == len(STATE_KEYS):
            return dict(zip(STATE_KEYS, state))
        if not isinstance(state, dict):
            raise DeserializationError(
                f"msgpack-state data holds {type(state).__name__}, expected a job state"
            )
        return state

    def _pack(self, value: Any) -> bytes:
        # msgpack's default hook runs while a Packer is busy, so nested payloads need their own
        # Packer: reuse one per depth (a fresh Packer per value costs more than the packing).
        local = self._local
        try:
            stack: list[msgpack.Packer] = local.stack
        except AttributeError:
            stack = local.stack = []
            local.depth = 0
        depth: int = local.depth
        if depth == len(stack):
            stack.append(msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True))
        local.depth = depth + 1
        try:
            return stack[depth].pack(value)  # type: ignore[no-any-return]
        finally:
            local.depth = depth

    def _default(self, value: Any) -> msgpack.ExtType:
        value_type = type(value)
        if value_type is dt.datetime:
            return _new_ext(_ExtType, (_DATETIME, self._datetime_payload(value)))
        if value_type is tuple:
            return _new_ext(_ExtType, (_TUPLE, self._pack(list(value)) if value else _EMPTY_ARRAY))
        kind, payload = self._marshaller.reduce(value)
        return _new_ext(_ExtType, (EXT_CODES[kind], self._pack(payload)))

    def _datetime_payload(self, value: dt.datetime) -> bytes:
        fields = _DATETIME_FIELDS.pack(
            value.year, value.month, value.day, value.hour, value.minute, value.second,
            value.microsecond, value.fold,
        )  # fmt: skip
        zone = value.tzinfo
        if zone is None:
            return fields
        key = _zone_key(zone)
        zone_bytes = self._zone_bytes.get(key)
        if zone_bytes is None:
            kind, payload = self._marshaller.reduce(zone)
            zone_bytes = self._pack(_new_ext(_ExtType, (EXT_CODES[kind], self._pack(payload))))
            if len(self._zone_bytes) > _CACHE_LIMIT:
                self._zone_bytes.clear()
            self._zone_bytes[key] = zone_bytes
        return fields + zone_bytes

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _DATETIME:
            return self._datetime_from(data)
        if code == _TUPLE:
            return tuple(msgpack.unpackb(data, ext_hook=self._ext_hook, strict_map_key=False))
        if code in _ZONE_CODES:
            return self._zone_from(code, data)
        return self._construct(code, data)

    def _zone_from(self, code: int, data: bytes) -> Any:
        zone = self._zones.get((code, data))
        if zone is None:
            zone = self._construct(code, data)
            if len(self._zones) > _CACHE_LIMIT:
                self._zones.clear()
            self._zones[code, data] = zone
        return zone

    def _construct(self, code: int, data: bytes) -> Any:
        kind = _KINDS_BY_CODE.get(code)
        if kind is None:
            raise DeserializationError(f"unknown msgpack-state ext type code {code}")
        payload = msgpack.unpackb(data, ext_hook=self._ext_hook, strict_map_key=False)
        return self._marshaller.construct(kind, payload)

    def _datetime_from(self, data: bytes) -> dt.datetime:
        try:
            year, month, day, hour, minute, second, micro, fold = _DATETIME_FIELDS.unpack_from(data)
            zone = None
            if len(data) > _DATETIME_FIELDS.size:
                tail = data[_DATETIME_FIELDS.size :]
                zone = self._zones.get((_DATETIME, tail))
                if zone is None:
                    zone = msgpack.unpackb(tail, ext_hook=self._ext_hook)
                    if not isinstance(zone, dt.tzinfo):
                        raise TypeError(f"expected a time zone, got {type(zone).__name__}")
                    self._zones[_DATETIME, tail] = zone
            return dt.datetime(year, month, day, hour, minute, second, micro, zone, fold=fold)
        except DeserializationError:
            raise
        except Exception as exc:
            raise DeserializationError(
                f"malformed datetime payload {data!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return "MsgpackStateSerializer()"
