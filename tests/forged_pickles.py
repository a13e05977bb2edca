"""A small assembler for hostile pickles: a pickle is a program, and these are the instructions an
attacker writes by hand (no class of theirs needs to exist to produce them)."""

from __future__ import annotations

import pickle
import struct
from typing import Any

from jobshelf.testing import sample_state

MARK, TUPLE, REDUCE, BUILD, NEWOBJ, STACK_GLOBAL = b"(", b"t", b"R", b"b", b"\x81", b"\x93"
_MARKER = "\x00jobshelf-forged-payload\x00"
#: When a forged job state is due: its own next run time (the state, not the index, decides).
DUE = sample_state()["next_run_time"]


def text(value: str) -> bytes:
    """BINUNICODE: push a str."""
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def value(obj: Any) -> bytes:
    """Push a plain value (int, float, None, bool, bytes, tuple of those), unmemoized."""
    return pickle.dumps(obj, 2)[2:-1].replace(b"q\x00", b"")


def glob(module: str, name: str) -> bytes:
    """GLOBAL: push module.name (protocol 0-3 spelling)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_global(module: str, name: str) -> bytes:
    """STACK_GLOBAL: push module.name, the name possibly dotted (protocol 4)."""
    return text(module) + text(name) + STACK_GLOBAL


def call(func: bytes, *args: bytes) -> bytes:
    """REDUCE: func(*args)."""
    return func + MARK + b"".join(args) + TUPLE + REDUCE


def new(cls: bytes, *args: bytes) -> bytes:
    """NEWOBJ: cls.__new__(cls, *args)."""
    return cls + MARK + b"".join(args) + TUPLE + NEWOBJ


def build(obj: bytes, state: bytes) -> bytes:
    """BUILD: fill obj in with state (left on the stack)."""
    return obj + state + BUILD


def dict_of(**items: bytes) -> bytes:
    """A dict of str keys to pushed values."""
    return b"}" + MARK + b"".join(text(key) + item for key, item in items.items()) + b"u"


def job_state(job_id: str, payload: bytes, *, func: str = "tests.trustapp.jobs:job") -> bytes:
    """A protocol 2 pickle of a valid job state whose ``args[0]`` is what ``payload`` pushes."""
    state = sample_state()
    state.update(id=job_id, func=func, args=(_MARKER,))
    data = pickle.dumps(state, 2)
    marker = text(_MARKER)
    assert data.count(marker) == 1
    return data.replace(marker, payload)
