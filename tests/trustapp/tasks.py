"""Allowed by a glob (``tests.trustapp.tasks:send_*``) in the trust tests."""

from __future__ import annotations

from typing import Any

SENT: list[tuple[Any, ...]] = []


def send_mail(*args: Any) -> None:
    SENT.append(args)


def delete_everything(*args: Any) -> None:
    """Not matched by the glob."""
    SENT.append(("deleted", *args))
