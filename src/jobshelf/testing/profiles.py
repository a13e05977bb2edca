"""Hypothesis profiles for serializer checks: fast by default, thousands of examples on request."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "load_profile"]

#: name -> examples per property. ``HYPOTHESIS_PROFILE=thorough`` before a release.
PROFILES = {"default": 40, "ci": 40, "thorough": 3000}


def load_profile(name: str | None = None) -> str:
    """Register the profiles and load ``name`` (default: ``$HYPOTHESIS_PROFILE``, else
    ``ci`` under CI, else ``default``). Returns the loaded profile's name."""
    for profile, examples in PROFILES.items():
        settings.register_profile(
            profile,
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=profile == "ci",
        )
    chosen = name or os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
    settings.load_profile(chosen)
    return chosen
