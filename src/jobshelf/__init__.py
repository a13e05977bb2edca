"""jobshelf: a drop-in MongoDB job store for APScheduler 3.x with pluggable serializers.

Public names are re-exported here from private modules::

    from jobshelf import MongoDBJobStore
    store = MongoDBJobStore(serializer="msgpack")
"""

from __future__ import annotations

from ._core import MigrationResult, QuarantinedJob, StoredJob
from ._core.history import HistorySummary, Holder, RunError, RunRecord
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
from ._marshal import StateMarshaller, TriggerCodec, register_trigger, registered_triggers, unregister_trigger
from ._resolve import available_serializers, resolve_serializer
from ._serializer import Serializer, SerializerSpec, format_name
from .memory import MemoryJobStore, MemoryStorage
from .mongodb import MongoDBJobStore
from .serializers import CloudPickleSerializer, MsgpackStateSerializer, PickleSerializer, SignedSerializer

__version__ = "0.2.0"

__all__ = [
    "CloudPickleSerializer",
    "DeserializationError",
    "HistorySummary",
    "Holder",
    "JobshelfError",
    "MemoryJobStore",
    "MemoryStorage",
    "MigrationResult",
    "MissingDependencyError",
    "MongoDBJobStore",
    "MsgpackStateSerializer",
    "PickleSerializer",
    "QuarantinedJob",
    "RunError",
    "RunRecord",
    "SerializationError",
    "Serializer",
    "SerializerConfigError",
    "SerializerSpec",
    "SignedSerializer",
    "StateMarshaller",
    "StoredJob",
    "TriggerCodec",
    "UnacceptedFormatError",
    "UnsupportedValueError",
    "available_serializers",
    "format_name",
    "job_to_state",
    "register_trigger",
    "registered_triggers",
    "resolve_serializer",
    "state_to_job",
    "unregister_trigger",
]
