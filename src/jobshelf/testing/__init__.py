"""jobshelf's conformance kit: prove that a serializer loses nothing.

Needs Hypothesis: ``pip install "jobshelf[testing]"``. ::

    from jobshelf.testing import check_serializer
    check_serializer(MySerializer())  # raises AssertionError with the minimal failing example
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._exceptions import MissingDependencyError

    raise MissingDependencyError(
        'jobshelf.testing needs Hypothesis: pip install "jobshelf[testing]"'
    ) from exc

from ._check import GARBAGE, check_serializer, fire_times, state_roundtrip_problem
from .strategies import ALL_CAPABILITIES, job_states, triggers, values, zones

__all__ = [
    "ALL_CAPABILITIES",
    "GARBAGE",
    "check_serializer",
    "fire_times",
    "job_states",
    "state_roundtrip_problem",
    "triggers",
    "values",
    "zones",
]
