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
        (lossy.TuplesToLists(), r"lost data: state\['(args|kwargs)'\].*expected tuple .*got list"),
        (
            lossy.PytzToUtc(),
            r"lost data: .*expected .*(US|Europe|America|Asia|Etc|Africa|Australia|Pacific|[A-Z]).*got",
        ),
        (lossy.TruncatesMicroseconds(), r"lost data: .*expected datetime"),
        (lossy.AcceptsAnything(), r"accepted kwargs\['value'\] = <unlocked _thread.lock"),
        (lossy.DecodesGarbage(), r"decoded garbage b''"),
    ],
    ids=["tuples-to-lists", "pytz-to-utc", "truncated-microseconds", "accepts-anything", "decodes-garbage"],
)
def test_kit_catches_lossy_serializers(serializer: object, expected: str) -> None:
    with pytest.raises(AssertionError, match=expected):
        check_serializer(serializer, max_examples=300)  # type: ignore[arg-type]


def test_capabilities_narrow_what_is_generated() -> None:
    """A serializer that cannot keep pytz zones passes once it declares so, and only then."""
    from jobshelf.testing import ALL_CAPABILITIES

    check_serializer(lossy.PytzToUtc(), capabilities=ALL_CAPABILITIES - {"pytz"}, max_examples=150)
    with pytest.raises(AssertionError, match="lost data"):
        check_serializer(lossy.PytzToUtc(), max_examples=300)
