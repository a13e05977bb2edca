"""The allowed application module of the trust tests: a few jobs of its own, and every kind of name
that only looks like one (imports, module attributes, wrappers, inherited and metaclass names)."""

from __future__ import annotations

import functools
import logging  # "tests.trustapp.jobs:logging.os.system" must not reach os.system
import os
from typing import Any

from tests.trustapp import util  # a module attribute
from tests.trustapp.util import helper  # re-exported: defined elsewhere

__all__ = ["Jobs", "WithMeta", "cached", "helper", "job", "logging", "util"]

RAN: list[tuple[Any, ...]] = []
TRAPPED: list[str] = []


def job(*args: Any) -> None:
    """A job of this module: allowed."""
    RAN.append(("job", *args))


def _private_job(*args: Any) -> None:
    """A private job (one leading underscore): allowed, it is defined here."""
    RAN.append(("_private_job", *args))


@functools.lru_cache(maxsize=8)
def cached(value: int) -> int:
    """An lru_cache wrapper keeps the wrapped function's names: allowed."""
    return value


@functools.wraps(job)
def wrapped(*args: Any) -> None:
    """Claims job's names through functools.wraps: it resolves to itself, not to job."""
    RAN.append(("wrapped", *args))


partial_job = functools.partial(job, "bound")
lambda_job = lambda *args: RAN.append(("lambda", *args))  # noqa: E731
LOGGER = logging.getLogger(__name__)
GETCWD = os.getcwd  # a built-in function of another module, kept as a module attribute


class Jobs:
    """A class of jobs: its methods are reached through the class only."""

    os = os  # a class attribute that is a module
    helper = staticmethod(helper)  # a static method defined elsewhere

    def method(self, *args: Any) -> None:
        RAN.append(("method", *args))

    @classmethod
    def create(cls, *args: Any) -> None:
        RAN.append(("create", *args))

    @staticmethod
    def static(*args: Any) -> None:
        RAN.append(("static", *args))

    class Nested:
        """A nested class: reached through its class."""

        @staticmethod
        def run(*args: Any) -> None:
            RAN.append(("nested", *args))


class Child(Jobs):
    """Inherits create: ``Child.create``'s own qualified name is ``Jobs.create``."""


class Meta(type):
    """A metaclass whose attribute would win over the class's in ``getattr``."""

    @property
    def trap(cls) -> Any:
        TRAPPED.append("Meta.trap")
        return os.system


class WithMeta(metaclass=Meta):
    """A class whose ``trap`` is answered by its metaclass's property."""

    def trap(self) -> None:  # type: ignore[misc]  # shadowed by Meta.trap on purpose
        RAN.append(("trap",))

    def plain(self) -> None:
        RAN.append(("plain",))
