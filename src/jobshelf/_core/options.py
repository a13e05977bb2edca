"""Configuration checked in jobshelf's words, before anything connects.

Options arrive from code or, through APScheduler's plugin aliases, from configuration files as
strings (``apscheduler.jobstores.default.shared = false``): booleans and numbers are parsed from
strings the way APScheduler parses its own options, and a misspelt jobshelf option is named with
the right spelling instead of being passed on to the database driver.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from apscheduler.util import asbool

__all__ = ["as_bool", "as_number", "check_unknown"]


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a boolean, parsing ``"true"``/``"false"``/``"yes"``/``"0"``... as APScheduler does.

    :raises ValueError: naming the option, for a string that is no boolean or another type
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return bool(asbool(value))
        except ValueError:
            pass
    elif isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_number(
    name: str, value: Any, *, integer: bool = False, minimum: float = 0.0, maximum: float | None = None
) -> Any:
    """``value`` as a finite number above ``minimum`` and at most ``maximum`` (a string is parsed).

    :raises ValueError: naming the option and what it takes
    """
    kind = "a whole number" if integer else "a number"
    takes = f"{kind} greater than {minimum:g}" + (
        f" and at most {maximum:.0f}" if maximum is not None else ""
    )
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = int(value) if integer else float(value)
        except ValueError:
            parsed = None
    if (
        isinstance(parsed, bool)
        or not isinstance(parsed, (int, float))
        or (integer and not isinstance(parsed, int))
    ):
        raise ValueError(f"{name} must be {takes}, got {value!r}")
    if not math.isfinite(parsed) or parsed <= minimum or (maximum is not None and parsed > maximum):
        raise ValueError(f"{name} must be {takes}, got {value!r}")
    return parsed


def check_unknown(owner: str, given: Iterable[str], known: Iterable[str], passed_on: Any = None) -> None:
    """Refuse an option that is neither the owner's nor passed on (e.g. to pymongo), naming the
    owner's option it most likely misspells.

    :param passed_on: a predicate telling whether the driver takes an option; ``None``: none do
    :raises TypeError: naming the unknown option and the nearest known one
    """
    known = sorted(known)
    lowered = {option.lower(): option for option in known}
    for option in given:
        if option in known or (passed_on is not None and passed_on(option)):
            continue
        near = difflib.get_close_matches(option.lower(), list(lowered), n=1, cutoff=0.6)
        hint = f"; did you mean {lowered[near[0]]!r}?" if near else f"; {owner} takes {', '.join(known)}"
        raise TypeError(f"{owner} got an unknown option {option!r}{hint}")
