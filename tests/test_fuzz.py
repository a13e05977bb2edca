"""Fuzzing the decoders that promise to run no code: only DeserializationError may escape.

``JOBSHELF_FUZZ_EXAMPLES`` sets the inputs per property (default 300; ``make fuzz`` runs 100,000
per property and prints each property's figures). Every input is decoded under an audit hook: an
import, exec, compile or process start fails the test, and so does an input that takes more than a
generous bound of time or memory (a hang or a blow-up, not a speed target). Each test counts and
reports its own inputs, so any one of them runs alone, in any order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobshelf import DeserializationError, MsgpackStateSerializer, SignedSerializer
from jobshelf.testing import job_states, load_state

from .helpers import audit_events, fuzz_examples

pytestmark = pytest.mark.fuzz

EXAMPLES = fuzz_examples()
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
#: Per input: generous bounds that only a hang or a blow-up would cross.
SECONDS = 5.0
PEAK_BYTES = 64 * 1024 * 1024

MSGPACK = MsgpackStateSerializer()
SIGNED = SignedSerializer("msgpack", keys=[b"k" * 32])


@dataclasses.dataclass
class FuzzFigures:
    """What one property's run saw: inputs decoded, the slowest, the largest peak of memory."""

    inputs: int = 0
    slowest: float = 0.0
    peak: int = 0

    def add(self, elapsed: float, peak: int) -> None:
        self.inputs += 1
        self.slowest = max(self.slowest, elapsed)
        self.peak = max(self.peak, peak)

    def report(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Fail if the run saw almost nothing; print the figures (``make fuzz`` shows them)."""
        assert self.inputs >= EXAMPLES * 0.9, f"{name}: only {self.inputs} of {EXAMPLES} inputs ran"
        with capsys.disabled():
            print(
                f"\nfuzz {name}: {self.inputs} inputs, slowest {self.slowest * 1000:.1f} ms, "
                f"peak {self.peak / 1024:.0f} KiB per input"
            )


def mutations(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid payloads with bytes flipped, replaced, inserted, deleted, duplicated or cut."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "repeat"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set" and data:
                data[at] = draw(st.sampled_from([0x00, 0xFF, 0xC1, 0xDD, 0xDF, 0xC7, 0xC9, 0xD8, 0x7F]))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif kind == "delete" and data:
                del data[at : at + draw(st.integers(1, 8))]
            elif kind == "cut":
                del data[at:]
            elif kind == "repeat" and data:
                chunk = data[at : at + draw(st.integers(1, 16))]
                data[at:at] = chunk * draw(st.integers(1, 50))
        return bytes(data)

    return mutate()


def decode_bounded(serializer: Any, data: bytes, figures: FuzzFigures) -> None:
    """Decode: only DeserializationError, no dangerous event, bounded time and memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with audit_events() as events, contextlib.suppress(DeserializationError):
            load_state(serializer, data)  # anything else escaping fails the test
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert events == [], events
    assert elapsed < SECONDS, f"{elapsed:.1f} s for {data[:60]!r}"
    assert peak < PEAK_BYTES, f"{peak} bytes for {data[:60]!r}"
    figures.add(elapsed, peak)


valid_msgpack = job_states().map(MSGPACK.dumps)


def test_msgpack_state_random_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    figures = FuzzFigures()

    @FUZZ
    @given(data=st.binary(max_size=512))
    def decode(data: bytes) -> None:
        decode_bounded(MSGPACK, data, figures)

    decode()
    figures.report("msgpack-state random bytes", capsys)


def test_msgpack_state_mutated_payloads(capsys: pytest.CaptureFixture[str]) -> None:
    figures = FuzzFigures()

    @FUZZ
    @given(data=mutations(valid_msgpack))
    def decode(data: bytes) -> None:
        decode_bounded(MSGPACK, data, figures)

    decode()
    figures.report("msgpack-state mutated", capsys)


def test_signed_payloads(capsys: pytest.CaptureFixture[str]) -> None:
    figures = FuzzFigures()

    @FUZZ
    @given(data=st.one_of(st.binary(max_size=256), mutations(job_states().map(SIGNED.dumps))))
    def decode(data: bytes) -> None:
        decode_bounded(SIGNED, data, figures)

    decode()
    figures.report("signed payloads", capsys)
