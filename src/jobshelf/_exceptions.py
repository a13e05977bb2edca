"""The exceptions jobshelf raises.

The hierarchy, in one picture::

    JobshelfError                     every error jobshelf raises on purpose
    ├── SerializationError            a job state could not be encoded (nothing was written)
    │   └── UnsupportedValueError     a value has no encoding in this format; ``.path`` says where
    ├── DeserializationError          stored bytes could not be decoded into a job state
    ├── SerializerConfigError         a ``serializer=``/``accept=`` spec is invalid or fails its self-check
    │   └── MissingDependencyError    an optional package is not installed (names the ``pip install``)
    └── UnacceptedFormatError         the collection holds jobs in formats the store does not accept

APScheduler's own :class:`~apscheduler.jobstores.base.ConflictingIdError` and
:class:`~apscheduler.jobstores.base.JobLookupError` keep their meaning and are raised as the stock
store raises them. Every jobshelf error that wraps another exception is chained to it
(``raise ... from exc``).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "DeserializationError",
    "JobshelfError",
    "MissingDependencyError",
    "SerializationError",
    "SerializerConfigError",
    "UnacceptedFormatError",
    "UnsupportedValueError",
]


class JobshelfError(Exception):
    """Base class of every error jobshelf raises on purpose."""


class SerializationError(JobshelfError, ValueError):
    """A job state could not be encoded. Nothing was written to the store."""


class UnsupportedValueError(SerializationError, TypeError):
    """A value inside the job state has no encoding in the chosen format.

    :ivar path: where the value sits in the job state, e.g. ``kwargs['conn']``
    :ivar value_type: the type that has no encoding
    """

    def __init__(self, path: str, value_type: type, format_name: str, hint: str = "") -> None:
        self.path = path
        self.value_type = value_type
        self.format_name = format_name
        message = f"{path}: {value_type.__qualname__} is not supported by {format_name}"
        if hint:
            message = f"{message} ({hint})"
        super().__init__(message)


class DeserializationError(JobshelfError, ValueError):
    """Stored bytes could not be decoded into a job state."""


class SerializerConfigError(JobshelfError, ValueError):
    """A ``serializer=`` or ``accept=`` specification is invalid or fails its self-check."""


class MissingDependencyError(SerializerConfigError, ImportError):
    """An optional dependency is not installed. The message names the ``pip install`` command."""


class UnacceptedFormatError(JobshelfError, RuntimeError):
    """The collection holds jobs in formats outside the store's ``accept`` list.

    :ivar counts: number of jobs per unaccepted format name
    """

    def __init__(self, message: str, counts: Mapping[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)
