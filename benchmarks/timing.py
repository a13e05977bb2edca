"""Measurement hygiene: warm-up, repeated interleaved rounds, median with min/max."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """Per-round values of one measurement (seconds per operation, or bytes)."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": self.values}


def time_per_call(func: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``func`` over ``calls`` calls."""
    clock = time.perf_counter
    start = clock()
    for _ in range(calls):
        func()
    return (clock() - start) / calls


def interleaved(
    contenders: Iterable[str],
    rounds: int,
    measure: Callable[[str], float],
    warmup: int = 1,
    progress: Callable[[], None] | None = None,
) -> dict[str, Sample]:
    """Run ``measure(name)`` for every contender in each round, rotating the order per round."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            measure(name)
    samples = {name: Sample() for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].values.append(measure(name))
            if progress is not None:
                progress()
    return samples
