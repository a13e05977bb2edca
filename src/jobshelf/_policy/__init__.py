"""Policy: what a decoded job state must look like, which callables it may name, and which
schedules APScheduler can compute. Every check runs after a state is decoded and before anything
in it is resolved or imported; a state that passes becomes a job, one that fails is quarantined.

- ``_state``: :func:`validate_state`, the shape of a state (and, through ``_schedules``, its trigger);
- ``_callables``: :class:`CallablePolicy`, the ``allowed_callables=`` list;
- ``_schedules``: admit only triggers that compute.
"""

from __future__ import annotations

from ._callables import CallablePolicy
from ._schedules import bounded_next_fire_time, check_outgoing_schedule, check_schedule
from ._state import validate_state

__all__ = [
    "CallablePolicy",
    "bounded_next_fire_time",
    "check_outgoing_schedule",
    "check_schedule",
    "validate_state",
]
