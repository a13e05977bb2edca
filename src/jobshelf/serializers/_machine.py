"""The bounded pickle machine the restricted unpickler runs on: Python's own opcode interpreter
(``pickle._Unpickler``) reading a pickle held whole in memory, with what no pickle may do bounded.

- every instruction is charged what it allocates against a budget of :data:`BUDGET_FACTOR` times
  the input plus :data:`BUDGET_BASE` (strings and bytes payloads: four bytes per input byte);
- memo indexes (protocol 0's PUT), text numbers (INT, LONG, GET, PUT) and BYTEARRAY8's claimed
  size are bounded; a read past the end is refused, never allocated;
- dict and set keys are checked before they are hashed (:meth:`BoundedMachine.check_items`);
- persistent ids, extension codes and out-of-band buffers are refused.

What the instructions that call, import or change something may do is decided by the subclass
(:mod:`._restricted`).
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from ._admitted import Refused

__all__ = ["BUDGET_BASE", "BUDGET_FACTOR", "MAX_KEY_NODES", "MAX_SAME_HASH", "BoundedMachine"]

#: A decode may allocate this much whatever its size...
BUDGET_BASE = 8 * 1024 * 1024
#: ... plus this many times the size of its input.
BUDGET_FACTOR = 256
#: Most keys of one dict or set that may share one hash (CPython's probing is quadratic in them).
MAX_SAME_HASH = 16
#: Most elements a tuple or frozenset key may expand to when hashed (shared references repeated).
MAX_KEY_NODES = 4096
#: The longest text number (INT, LONG, GET, PUT of protocol 0) read.
MAX_TEXT_DIGITS = 4300

_PRIVATE: Any = pickle  # Python's own interpreter and its stop signal
_PyUnpickler: Any = _PRIVATE._Unpickler
_Stop: Any = _PRIVATE._Stop
_UINT32 = struct.Struct("<I")
_UINT64 = struct.Struct("<Q")


def _cost_table() -> list[int]:
    """Bytes charged per opcode before it runs (its new object and stack slot; items and payloads
    are charged where they are known)."""
    costs = [16] * 256
    for names, cost in (
        (("EMPTY_SET", "FROZENSET"), 232),
        (("EMPTY_DICT", "DICT"), 248),
        (("EMPTY_LIST", "LIST", "MARK"), 72),
        (("TUPLE1", "TUPLE2", "TUPLE3", "TUPLE"), 80),
        (("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"), 112),
        (("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"), 40),
        (("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"), 128),
        (("PROTO", "FRAME", "STOP", "POP", "POP_MARK"), 0),
    ):  # fmt: skip
        for name in names:
            costs[getattr(pickle, name)[0]] = cost
    for name in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
                 "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):  # fmt: skip
        costs[getattr(pickle, name)[0]] = 80  # plus the payload: charged at the end, 4 bytes a byte
    return costs


_COSTS = _cost_table()


class BoundedMachine(_PyUnpickler):  # type: ignore[misc]
    """Python's pickle interpreter over a whole pickle in memory, with its costs bounded."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = {}  # filled below the class

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(b""))
        self._data = data
        self._pos = 0
        self._size = len(data)
        # payloads (strings, bytes) take at most 4 bytes per input byte: charged up front
        self._budget = BUDGET_BASE + BUDGET_FACTOR * len(data) - 4 * len(data)
        self._hashes: dict[tuple[int, int], int] = {}
        self._counted: dict[int, Any] = {}  # the containers _hashes counts for, kept alive

    def load(self) -> Any:
        """Run the pickle; its result, or :class:`~._admitted.Refused`."""
        self.read = self._read
        self.readline = self._readline
        self.metastack: list[list[Any]] = []
        self.stack: list[Any] = []
        self.append = self.stack.append
        self.proto = 0
        data, size, dispatch, costs = self._data, self._size, self.dispatch, _COSTS
        try:
            while True:
                pos = self._pos
                if pos >= size:
                    raise Refused("the pickle ends before its STOP instruction")
                code = data[pos]
                self._pos = pos + 1
                self._budget -= costs[code]
                if self._budget < 0:
                    self._over_budget()
                dispatch[code](self)
        except _Stop as stop:
            return stop.value

    def _read(self, size: int) -> bytes:
        start = self._pos
        self._pos = end = start + size
        if end > self._size:
            raise Refused("the pickle ends in the middle of an instruction")
        return self._data[start:end]

    def _readline(self) -> bytes:
        start = self._pos
        end = self._data.find(b"\n", start) + 1
        if not end:
            raise Refused("the pickle ends in the middle of a line")
        self._pos = end
        return self._data[start:end]

    def load_frame(self) -> None:
        """Frames only group the bytes of a pickle read whole: their sizes are skipped."""
        self._read(8)

    # ------------------------------------------------------------------------- what guards may ask

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more against the memory budget."""
        self._budget -= nbytes
        if self._budget < 0:
            self._over_budget()

    def _over_budget(self) -> None:
        limit = BUDGET_BASE + BUDGET_FACTOR * self._size
        raise Refused(
            f"decoding would take more than {limit} bytes of memory ({BUDGET_FACTOR} times the "
            f"{self._size}-byte state, plus {BUDGET_BASE}); a job state never needs that"
        )

    def check_items(self, container: Any, items: Any) -> None:
        """Refuse keys whose hashing would cost more than their size: more than
        :data:`MAX_SAME_HASH` sharing one hash in one container, or tuples and frozensets that
        expand beyond :data:`MAX_KEY_NODES` elements."""
        self.charge(64 * len(items))
        hashes: dict[tuple[int, int], int] = {}
        if container is not None:
            hashes = self._hashes
            self._counted[id(container)] = container
        where = id(container)
        for key in items:
            kind = type(key)
            if kind is str or kind is bytes:
                continue  # randomized hashes
            if kind is tuple or kind is frozenset:
                _check_expansion(key)
            marker = (where, hash(key))
            count = hashes.get(marker, 0) + 1
            if count > MAX_SAME_HASH:
                raise Refused(
                    f"more than {MAX_SAME_HASH} keys of one dict or set share a hash: inserting them "
                    "would take quadratic time"
                )
            hashes[marker] = count

    def _text_number(self, opcode: str) -> bytes:
        line: bytes = self.readline()
        if len(line) > MAX_TEXT_DIGITS + 2:
            raise Refused(f"{opcode} with a number of {len(line)} digits")
        return line

    def load_int(self) -> None:
        data = self._text_number("INT")
        self.append(False if data == b"00\n" else True if data == b"01\n" else int(data, 0))

    def load_long(self) -> None:
        data = self._text_number("LONG")[:-1]
        self.append(int(data[:-1] if data.endswith(b"L") else data, 0))

    def _memo_get(self, index: int) -> Any:
        try:
            return self.memo[index]
        except KeyError:
            raise Refused(f"memo value {index} was never stored") from None

    def _memo_put(self, index: int, opcode: str) -> None:
        if not 0 <= index < 1 << 32:
            raise Refused(f"{opcode} with memo index {index}")
        self.memo[index] = self.stack[-1]

    def load_get(self) -> None:
        self.append(self._memo_get(int(self._text_number("GET"))))

    def load_put(self) -> None:
        self._memo_put(int(self._text_number("PUT")), "PUT")

    def load_binget(self) -> None:
        self.append(self._memo_get(self.read(1)[0]))

    def load_long_binget(self) -> None:
        self.append(self._memo_get(_UINT32.unpack(self.read(4))[0]))

    def load_bytearray8(self) -> None:
        (size,) = _UINT64.unpack(self.read(8))
        if size > self._size:
            raise Refused(f"BYTEARRAY8 claims {size} bytes; the whole state has {self._size}")
        data = self.read(size)
        if len(data) != size:
            raise Refused("BYTEARRAY8 is truncated")
        self.append(bytearray(data))

    def load_refused(self) -> None:
        raise Refused("persistent ids, extension codes and out-of-band buffers are not part of a job state")


_OVERRIDES = {
    "FRAME": "load_frame", "INT": "load_int", "LONG": "load_long", "GET": "load_get", "PUT": "load_put",
    "BINGET": "load_binget", "LONG_BINGET": "load_long_binget", "BYTEARRAY8": "load_bytearray8",
    "PERSID": "load_refused", "BINPERSID": "load_refused", "EXT1": "load_refused", "EXT2": "load_refused",
    "EXT4": "load_refused", "NEXT_BUFFER": "load_refused", "READONLY_BUFFER": "load_refused",
}  # fmt: skip
BoundedMachine.dispatch = dict(_PyUnpickler.dispatch)
for _opcode, _method in _OVERRIDES.items():
    BoundedMachine.dispatch[getattr(pickle, _opcode)[0]] = getattr(BoundedMachine, _method)


def _check_expansion(key: Any) -> None:
    pending, seen = [key], 0
    while pending:
        item = pending.pop()
        if type(item) is tuple or type(item) is frozenset:
            seen += len(item)
            if seen > MAX_KEY_NODES:
                raise Refused(
                    f"a tuple or frozenset key expands to more than {MAX_KEY_NODES} elements when "
                    "hashed (shared references repeated); a job state never needs that"
                )
            pending.extend(item)
