"""``msgpack``: job state as plain data (msgpack-state); compact, and decoding runs no code."""

from __future__ import annotations

import datetime as dt
import struct
import threading
from collections.abc import Iterable
from typing import Any

import msgpack

from .._exceptions import DeserializationError, SerializationError
from .._marshal import StateMarshaller, TriggerCodec, datetime_fields
from .._marshal._zones import fixed_offset_args

__all__ = ["EXT_CODES", "MAX_DEPTH", "MAX_EXT_VALUES", "STATE_KEYS", "MsgpackStateSerializer"]

#: A job state with exactly these keys is stored as an array of their values, in this order.
STATE_KEYS = (
    "version", "id", "func", "trigger", "executor", "args", "kwargs", "name",
    "misfire_grace_time", "coalesce", "max_instances", "next_run_time",
)  # fmt: skip
_STATE_KEYS_SET = frozenset(STATE_KEYS)

#: msgpack ext type code of each value kind (see the README's "msgpack-state schema").
EXT_CODES: dict[str, int] = {
    "tuple": 1, "set": 2, "frozenset": 3, "int": 4, "decimal": 5, "uuid": 6, "datetime": 7,
    "date": 8, "time": 9, "timedelta": 10, "timezone": 11, "zoneinfo": 12, "pytz": 13, "trigger": 14,
}  # fmt: skip
_KINDS_BY_CODE = {code: kind for kind, code in EXT_CODES.items()}
_ZONE_CODES = frozenset((EXT_CODES["zoneinfo"], EXT_CODES["pytz"], EXT_CODES["timezone"]))

#: How deeply ext values may nest (a tuple in a tuple in a trigger...). Each level is one more
#: C-level unpack on the stack, so this bound is what keeps a hostile document from overflowing it.
MAX_DEPTH = 32
#: How many values holding further msgpack (tuples, sets, triggers, zones...) one job state may
#: have, encoded or decoded: bounds the work per document.
MAX_EXT_VALUES = 100_000
#: Each nested value takes at least 3 bytes, so a shorter state cannot exceed MAX_EXT_VALUES.
_BUDGET_BYTES = 3 * MAX_EXT_VALUES
#: Cached zone payloads are short; longer ones are decoded every time rather than kept.
_CACHE_KEY_LIMIT = 128
_CACHE_LIMIT = 1024
#: msgpack ints: signed and unsigned 64 bits; other ints use ext 4.
_INT_MIN, _INT_END = -(2**63), 2**64

# msgpack.ExtType is a namedtuple whose __new__ re-validates in Python (about 1 us a call); the
# values built here are valid by construction, so build the tuple directly (about 0.2 us).
_ExtType = msgpack.ExtType
_new_ext = tuple.__new__
_unpackb = msgpack.unpackb
_DATETIME = EXT_CODES["datetime"]
_TUPLE = EXT_CODES["tuple"]
_EMPTY_ARRAY = b"\x90"
#: datetime ext payload: year, month, day, hour, minute, second, microsecond, fold (big-endian),
#: followed by the zone as one packed msgpack value (absent for a naive datetime)
_DATETIME_FIELDS = struct.Struct(">HBBBBBIB")


class _LimitExceeded(Exception):
    pass


def _native_int(value: int) -> bool:
    return _INT_MIN <= value < _INT_END


def _zone_key(zone: dt.tzinfo) -> Any:
    # datetime.timezone hashes and compares by offset only: its name must be part of the key
    if type(zone) is dt.timezone:
        return fixed_offset_args(zone)
    return zone


class MsgpackStateSerializer:
    """Encodes job state as msgpack, with msgpack ext types for everything msgpack lacks.

    Round trips are exact: tuples stay tuples, datetimes keep their microseconds, ``fold`` and
    zone (a zoneinfo zone stays zoneinfo, a pytz zone stays pytz with the same offset variant),
    dict keys may be any supported value, and ints of any size survive. Decoding imports nothing,
    builds only the types msgpack-state knows plus registered triggers, and is bounded: values
    holding further msgpack (tuples, sets, triggers, zones...) nest at most :data:`MAX_DEPTH` deep
    and number at most :data:`MAX_EXT_VALUES` per state (encoding refuses the same), and no header
    may claim more items than the data holds.

    :param triggers: extra custom trigger codecs for this serializer only (see also
        :func:`jobshelf.register_trigger`, which reaches every serializer, made before or after)
    """

    format_name = "msgpack"
    pickle_family = False
    stores_callables_by_value = False
    decoding_runs_code = False

    def __init__(self, *, triggers: Iterable[TriggerCodec] = ()) -> None:
        self._marshaller = StateMarshaller(triggers, "msgpack-state", _native_int)
        self._local = threading.local()  # per thread: packers per depth, depth and nested budget
        self._zone_bytes: dict[Any, bytes] = {}  # zone -> its packed ext, for datetime payloads
        self._zones: dict[tuple[int, bytes], Any] = {}  # (code, payload) -> zone

    # ------------------------------------------------------------------------- encoding

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Encode ``state``. :raises UnsupportedValueError: with the path to the value."""
        try:
            if state.keys() == _STATE_KEYS_SET:
                data = self._pack([state[key] for key in STATE_KEYS])
            else:
                data = self._pack(state)
            if len(data) >= _BUDGET_BYTES:
                _Decoding(self).count(data)  # what the decoder would refuse is not written
            return data
        except _LimitExceeded as exc:
            raise SerializationError(f"msgpack-state cannot encode the job state: {exc}") from None
        except Exception as exc:
            located = self._marshaller.find_unsupported(state)
            if located is not None:
                raise located from exc
            raise SerializationError(
                f"msgpack-state cannot encode the job state: {type(exc).__name__}: {exc}"
            ) from exc

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
        if depth > MAX_DEPTH:
            raise _LimitExceeded(f"values nest deeper than {MAX_DEPTH} levels")
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
        fields = _DATETIME_FIELDS.pack(*datetime_fields(value))
        zone = value.tzinfo
        if zone is None:
            return fields
        key = _zone_key(zone)
        zone_bytes = self._zone_bytes.get(key)
        if zone_bytes is None:
            kind, payload = self._marshaller.reduce(zone)
            zone_bytes = self._pack(_new_ext(_ExtType, (EXT_CODES[kind], self._pack(payload))))
            if len(self._zone_bytes) >= _CACHE_LIMIT:
                self._zone_bytes.clear()
            self._zone_bytes[key] = zone_bytes
        return fields + zone_bytes

    # ------------------------------------------------------------------------- decoding

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Decode ``data``. :raises DeserializationError: on anything but msgpack-state data."""
        local = self._local
        decoding = getattr(local, "decoding", None)
        if decoding is None or decoding.depth:  # none yet, or busy (a loads inside a loads)
            decoding = local.decoding = _Decoding(self)
        decoding.depth = 0
        decoding.budget = MAX_EXT_VALUES
        try:
            state = decoding.unpack(data)
        except DeserializationError:
            raise
        except _LimitExceeded as exc:
            raise DeserializationError(f"msgpack-state refused the job state: {exc}") from None
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

    def __repr__(self) -> str:
        return "MsgpackStateSerializer()"


class _Decoding:
    """One ``loads`` call: the nesting depth and the budget of nested values, as plain attributes.

    Every ext payload that holds further msgpack (a tuple, a trigger, an uncached zone...) is one
    more ``unpackb`` on the C stack: at most :data:`MAX_DEPTH` deep and :data:`MAX_EXT_VALUES` in
    all. msgpack's own limits apply to each: no header may claim more items or bytes than its data
    holds (``unpackb`` derives every ``max_*_len`` from the data's size). A datetime costs a struct
    unpack and at least 14 bytes, so the state's size bounds them.
    """

    __slots__ = ("budget", "depth", "ext_hook", "serializer")

    def __init__(self, serializer: MsgpackStateSerializer) -> None:
        self.serializer = serializer
        self.depth = 0
        self.budget = MAX_EXT_VALUES
        self.ext_hook = self._ext_hook  # bound once: every nested unpack reuses it

    def count(self, data: bytes) -> None:
        """Walk ``data`` as decoding would, spending the budget, building nothing.

        :raises _LimitExceeded: when decoding would refuse it
        """
        self.ext_hook = self._count_hook
        self.unpack(data)

    def _count_hook(self, code: int, data: bytes) -> None:
        if code == _DATETIME:
            if len(data) > _DATETIME_FIELDS.size:
                self.unpack(data[_DATETIME_FIELDS.size :])
        elif not (code == _TUPLE and data == _EMPTY_ARRAY):
            self.unpack(data)

    def unpack(self, data: bytes) -> Any:
        depth = self.depth
        if depth >= MAX_DEPTH:
            raise _LimitExceeded(f"values nest deeper than {MAX_DEPTH} levels")
        self.budget -= 1
        if self.budget < 0:
            raise _LimitExceeded(f"more than {MAX_EXT_VALUES} tuples, zones or triggers")
        self.depth = depth + 1  # not restored on an error: a failed decode discards this context
        value = _unpackb(data, ext_hook=self.ext_hook, strict_map_key=False)
        self.depth = depth
        return value

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _DATETIME:
            return self._datetime(data)
        if code == _TUPLE:
            if data == _EMPTY_ARRAY:
                return ()  # as encoding writes it, without a nested pack
            items = self.unpack(data)
            if type(items) is not list:
                raise DeserializationError("malformed tuple payload")
            return tuple(items)
        if code in _ZONE_CODES:
            return self._zone(code, data)
        return self._construct(code, data)

    def _construct(self, code: int, data: bytes) -> Any:
        kind = _KINDS_BY_CODE.get(code)
        if kind is None:
            raise DeserializationError(f"unknown msgpack-state ext type code {code}")
        return self.serializer._marshaller.construct(kind, self.unpack(data))

    def _zone(self, code: int, data: bytes) -> Any:
        zones = self.serializer._zones
        zone = zones.get((code, data))
        if zone is None:
            zone = self._construct(code, data)
            _remember(zones, (code, data), zone)
        return zone

    def _datetime(self, data: bytes) -> dt.datetime:
        try:
            # the fields in DATETIME_FIELDS order (what datetime_from_fields does, inlined: hot path)
            year, month, day, hour, minute, second, microsecond, fold = _DATETIME_FIELDS.unpack_from(data)
            if len(data) == _DATETIME_FIELDS.size:
                return dt.datetime(year, month, day, hour, minute, second, microsecond, fold=fold)
            tail = data[_DATETIME_FIELDS.size :]
            zones = self.serializer._zones
            zone = zones.get((_DATETIME, tail))
            if zone is None:
                zone = self.unpack(tail)
                if not isinstance(zone, dt.tzinfo):
                    raise TypeError(f"expected a time zone, got {type(zone).__name__}")
                _remember(zones, (_DATETIME, tail), zone)
            return dt.datetime(year, month, day, hour, minute, second, microsecond, zone, fold=fold)
        except (DeserializationError, _LimitExceeded):
            raise
        except Exception as exc:
            raise DeserializationError(
                f"malformed datetime payload {data[:40]!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _remember(cache: dict[Any, Any], key: tuple[int, bytes], value: Any) -> None:
    """Cache a decoded zone: short payloads only, a bounded number of them."""
    if len(key[1]) <= _CACHE_KEY_LIMIT:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
