"""A run log that callables stored by value refer to through this module (as a lambda refers to a
module it imported): the tests wait on it."""

from __future__ import annotations

from typing import Any

from tests.helpers import RunLog

RUNS = RunLog()


def record_run(name: str, *args: Any) -> None:
    """An importable function a partial can bind."""
    RUNS.record(name, *args)
