"""jobshelf: a drop-in MongoDB job store for APScheduler 3.x with pluggable serializers.

Public names are re-exported here from private modules::

    from jobshelf import MongoDBJobStore
    store = MongoDBJobStore(serializer="msgpack")
"""

from __future__ import annotations

from ._exceptions import (
    DeserializationError,
    JobshelfError,
    MissingDependencyError,
    SerializationError,
    SerializerConfigError,
    UnacceptedFormatError,
    UnsupportedValueError,
)
from ._jobstate import job_to_state, state_to_job
from ._serializer import (
    Serializer,
    SerializerSpec,
    available_serializers,
    format_name,
    resolve_serializer,
)
from .mongodb import MongoDBJobStore
from .serializers import CloudPickleSerializer, MsgpackStateSerializer, PickleSerializer
from .serializers._marshal import StateMarshaller, TriggerCodec, register_trigger

__version__ = "0.1.0"

__all__ = [
    "CloudPickleSerializer",
    "DeserializationError",
    "JobshelfError",
    "MissingDependencyError",
    "MongoDBJobStore",
    "MsgpackStateSerializer",
    "StateMarshaller",
    "TriggerCodec",
    "register_trigger",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "SerializerSpec",
    "SerializerConfigError",
    "UnacceptedFormatError",
    "UnsupportedValueError",
    "available_serializers",
    "format_name",
    "job_to_state",
    "resolve_serializer",
    "state_to_job",
]
