"""``check_serializer``: the round-trip properties every serializer must pass."""

from __future__ import annotations

import datetime as dt
import random
import threading
import warnings
from collections.abc import Collection, Iterable
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import BaseCombiningTrigger
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import HypothesisWarning

from .._compare import state_difference
from .._exceptions import DeserializationError, SerializationError
from .._resolve import resolve_serializer
from .._serializer import SerializerSpec, dump_state, format_name, load_state, sample_state
from ._hard import hard_states
from .strategies import ALL_CAPABILITIES, job_states

__all__ = ["GARBAGE", "check_serializer", "fire_times", "state_roundtrip_problem"]

#: Bytes no serializer may decode into a job state.
GARBAGE: tuple[bytes, ...] = (
    b"",
    b"\x00",
    b"garbage",
    bytes(range(256)),
    b"\x80",  # an empty msgpack map
    b"\x93\x01\x02\x03",  # a msgpack array
    b"\x80\x05K*.",  # pickle of 42
    b'{"id": "x"}',
)

_FIRE_TIME_ORIGINS = (
    dt.datetime(2000, 2, 29, 12, 0, tzinfo=dt.timezone.utc),
    dt.datetime(2031, 3, 30, 1, 30, tzinfo=dt.timezone.utc),
)


def _unsupported_values() -> tuple[Any, ...]:
    return (threading.Lock(),)


def fire_times(trigger: BaseTrigger, now: dt.datetime, count: int = 3) -> list[Any]:
    """The next ``count`` fire times from ``now`` (or the exception type that stopped them).

    Jitter is made repeatable by seeding :mod:`random`. An AndTrigger can search forever when
    its members never coincide, so for And and Or triggers the members' fire times are listed
    instead (their own schedule is a pure function of them; their state is compared separately).
    """
    if isinstance(trigger, BaseCombiningTrigger):
        return [fire_times(member, now, count) for member in trigger.triggers]
    results: list[Any] = []
    for index in range(count):
        random.seed(index)
        try:
            fire_time = trigger.get_next_fire_time(None, now)
        except Exception as exc:  # the original and the copy must fail alike
            results.append(type(exc))
            break
        results.append(fire_time)
        if fire_time is None:
            break
        try:
            now = fire_time + dt.timedelta(microseconds=1)
        except OverflowError:
            break
    return results


def state_roundtrip_problem(serializer: Any, state: dict[str, Any]) -> str | None:
    """Encode and decode ``state``; describe the first thing lost, or return ``None``."""
    name = format_name(serializer)
    try:
        data = dump_state(serializer, state)
    except SerializationError as exc:
        return f"{name} refused a state within its declared capabilities: {exc}"
    try:
        restored = load_state(serializer, data)
    except DeserializationError as exc:
        return f"{name} could not decode its own output: {exc}"
    difference = state_difference(state, restored)
    if difference is not None:
        return f"{name} lost data: {difference}"
    for now in _FIRE_TIME_ORIGINS:
        expected = fire_times(state["trigger"], now)
        actual = fire_times(restored["trigger"], now)
        found = state_difference(expected, actual, f"fire times from {now.isoformat()}")
        if found is not None:
            return f"{name} changed the schedule: {found}"
    return None


def check_serializer(
    serializer: SerializerSpec,
    *,
    capabilities: Collection[str] = ALL_CAPABILITIES,
    unsupported: Iterable[Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """Prove that ``serializer`` loses nothing, with Hypothesis-generated job states.

    Checks, in order: each value in ``unsupported`` (default: a :class:`threading.Lock`) is
    refused with :class:`SerializationError` rather than stored lossily; each of :data:`GARBAGE`
    is refused with :class:`DeserializationError`; each known-hard state (:func:`hard_states`:
    nested tuples, folds, years 1 and 9999, pytz DST variants, cron edge cases...) survives; and
    every generated state (all built-in
    triggers, pytz and zoneinfo zones, aware datetimes in years 1..9999, paused jobs, nested
    arguments; narrowed to ``capabilities``) survives ``dumps``/``loads`` exactly (types, values, trigger
    ``__getstate__()``, next fire times).

    :param serializer: anything ``serializer=`` accepts (a name, class, instance, module...)
    :param capabilities: what the serializer supports (see ``strategies.ALL_CAPABILITIES``)
    :param unsupported: values the serializer must refuse
    :param max_examples: Hypothesis examples (default: the active Hypothesis profile)
    :raises AssertionError: with the minimal failing example when anything is lost
    """
    resolved = resolve_serializer(serializer, check=False)
    name = format_name(resolved)
    overrides: dict[str, Any] = {} if max_examples is None else {"max_examples": max_examples}

    for value in _unsupported_values() if unsupported is None else unsupported:
        state = sample_state()
        state["kwargs"] = {"value": value}
        try:
            data = dump_state(resolved, state)
        except SerializationError:
            continue
        raise AssertionError(
            f"{name} accepted kwargs['value'] = {value!r} ({len(data)} bytes) instead of raising "
            "SerializationError: a value it cannot represent must be refused, not stored lossily"
        )

    for garbage in GARBAGE:
        try:
            restored = load_state(resolved, garbage)
        except DeserializationError:
            continue
        raise AssertionError(
            f"{name} decoded garbage {garbage[:40]!r} into {restored!r} instead of raising "
            "DeserializationError"
        )

    # known-hard states first: a lossy serializer is caught the same way on every run
    for state in hard_states(capabilities):
        problem = state_roundtrip_problem(resolved, state)
        if problem is not None:
            raise AssertionError(f"{problem} (known-hard state {state['id']!r})")

    # job states are large by design: their generation is slow, not the code under test
    @hypothesis_settings(
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        deadline=None,
        **overrides,
    )
    @given(state=job_states(capabilities))
    def round_trip(state: dict[str, Any]) -> None:
        problem = state_roundtrip_problem(resolved, state)
        if problem is not None:
            raise AssertionError(problem)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Generating overly large repr", HypothesisWarning)
        round_trip()
