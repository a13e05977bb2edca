"""The conformance kit passes the shipped serializers and catches lossy ones."""

from __future__ import annotations

import pytest

from jobshelf.testing import check_serializer

from . import lossy


@pytest.mark.parametrize("name", ["pickle", "cloudpickle", "msgpack"])
def test_builtin_serializers_pass_the_kit(name: str) -> None:
    check_serializer(name)


@pytest.mark.parametrize(
    ("serializer", "expected"),
    [
        (
            lossy.TuplesToLists(),
            r"lost data: state\['args'\]\[1\]: expected tuple \(2, \(3,\)\), got list .*'hard-tuples'",
        ),
        (
            lossy.PytzToUtc(),
            r"lost data: state\['kwargs'\]\['when'\]: expected "
            r".*<DstTzInfo 'US/Eastern' EST-1 day, 19:00:00 STD>\), got .*timezone\.utc\).*'hard-pytz'",
        ),
        (
            lossy.TruncatesMicroseconds(),
            r"lost data: state\['next_run_time'\]: expected "
            r"datetime\.datetime\(2031, 3, 30, 1, 30, 15, 123456.*'hard-tuples'",
        ),
        (lossy.AcceptsAnything(), r"accepted kwargs\['value'\] = <unlocked _thread.lock"),
        (lossy.DecodesGarbage(), r"decoded garbage b''"),
    ],
    ids=["tuples-to-lists", "pytz-to-utc", "truncated-microseconds", "accepts-anything", "decodes-garbage"],
)
def test_kit_catches_lossy_serializers(serializer: object, expected: str) -> None:
    # Found before the random search: the same minimal case on every run, with one example or many.
    for examples in (1, 300):
        with pytest.raises(AssertionError, match=expected):
            check_serializer(serializer, max_examples=examples)  # type: ignore[arg-type]


def test_capabilities_narrow_what_is_generated() -> None:
    """A serializer that cannot keep pytz zones passes once it declares so, and only then."""
    from jobshelf.testing import ALL_CAPABILITIES

    check_serializer(lossy.PytzToUtc(), capabilities=ALL_CAPABILITIES - {"pytz"}, max_examples=150)
    with pytest.raises(AssertionError, match=r"lost data.*'hard-pytz'"):
        check_serializer(lossy.PytzToUtc(), max_examples=1)
