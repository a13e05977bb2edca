"""Lossless text of a CronTrigger field.

``str(field)`` is not always lossless: APScheduler renders the range ``0-0/1`` as ``0/1``, which
parses back as "from 0 to the maximum, every 1" (the conformance kit found this). This renders
such a range with its end, and every other expression as APScheduler does.
"""

from __future__ import annotations

from typing import Any

from apscheduler.triggers.cron.expressions import RangeExpression

__all__ = ["field_expression"]


def field_expression(field: Any) -> str:
    """The expression that recompiles to the same field: ``FIELDS_MAP[name](name, text, default)``."""
    parts = []
    for expression in field.expressions:
        if type(expression) is RangeExpression and expression.step and expression.last == expression.first:
            parts.append(f"{expression.first}-{expression.last}/{expression.step}")
        else:
            parts.append(str(expression))
    return ",".join(parts)
