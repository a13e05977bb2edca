"""jobshelf's conformance kit: prove that a serializer loses nothing.

Needs Hypothesis: ``pip install "jobshelf[testing]"``. ::

    from jobshelf.testing import check_serializer
    check_serializer(MySerializer())  # raises AssertionError with the minimal failing example

Besides the check itself it exports what a serializer's own tests need: ``sample_state()`` (a small
valid job state), ``dump_state``/``load_state`` (encode and decode with any serializer, every
failure turned into ``SerializationError``/``DeserializationError``), ``state_difference`` (exact
comparison: ``None`` or where two states differ), the Hypothesis strategies, and
``load_profile()`` (the ``default``, ``ci`` and ``thorough`` Hypothesis profiles; call it from a
plugin's ``conftest.py`` and pick one with ``HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._exceptions import MissingDependencyError

    raise MissingDependencyError(
        'jobshelf.testing needs Hypothesis: pip install "jobshelf[testing]"'
    ) from exc

from .._compare import state_difference
from .._serializer import dump_state, load_state, sample_state
from ._check import GARBAGE, check_serializer, fire_times, state_roundtrip_problem
from ._hard import hard_states
from .profiles import load_profile
from .strategies import ALL_CAPABILITIES, job_states, triggers, values, zones

__all__ = [
    "ALL_CAPABILITIES",
    "GARBAGE",
    "check_serializer",
    "dump_state",
    "fire_times",
    "hard_states",
    "job_states",
    "load_profile",
    "load_state",
    "sample_state",
    "state_difference",
    "state_roundtrip_problem",
    "triggers",
    "values",
    "zones",
]
