"""Plain-data encodings of the values in a job state: the layer every plain-data format shares.

A value that is not plain data (``None``, bool, int, float, str, bytes, list, dict) is *reduced* to
a ``(kind, payload)`` pair whose payload is plain data or further values to reduce, and
*constructed* back from it. Constructing runs no code from the payload: it imports nothing and
instantiates only the kinds listed in :data:`KINDS` and the trigger classes in the registry.
msgpack-state maps each kind to an ext type code; the JSON example maps it to ``{"$kind": payload}``.

One module per concept: ``_values`` (containers, numbers, dates and times), ``_zones`` (time zones),
``_triggers`` (trigger codecs, cron fields and the registry), ``_marshaller`` (the configured object).
"""

from __future__ import annotations

from ._marshaller import KINDS, StateMarshaller
from ._triggers import (
    MAX_CRON_EXPRESSION,
    TriggerCodec,
    field_expression,
    register_trigger,
    registered_triggers,
    unregister_trigger,
)
from ._values import datetime_fields, datetime_from_fields
from ._zones import fixed_offset_args

__all__ = [
    "KINDS",
    "MAX_CRON_EXPRESSION",
    "StateMarshaller",
    "TriggerCodec",
    "datetime_fields",
    "datetime_from_fields",
    "field_expression",
    "fixed_offset_args",
    "register_trigger",
    "registered_triggers",
    "unregister_trigger",
]
