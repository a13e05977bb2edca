"""Defines ``helper``, which ``tests.trustapp.jobs`` re-exports."""

from __future__ import annotations

from typing import Any

CALLS: list[tuple[Any, ...]] = []


def helper(*args: Any) -> None:
    """Defined here: its own reference is ``tests.trustapp.util:helper``."""
    CALLS.append(args)
