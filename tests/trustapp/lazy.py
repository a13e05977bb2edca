"""A module with a module-level ``__getattr__`` (PEP 562): looking a name up runs it."""

from __future__ import annotations

from typing import Any

ASKED: list[str] = []


def __getattr__(name: str) -> Any:
    ASKED.append(name)
    raise AttributeError(name)
