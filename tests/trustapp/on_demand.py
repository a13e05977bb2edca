"""Importing this module is recorded: the tests prove it is imported only when allowed."""

from __future__ import annotations

from typing import Any

RAN: list[tuple[Any, ...]] = []


def job(*args: Any) -> None:
    RAN.append(args)
