"""The store core: what every jobshelf store does the same way, whatever its database.

- encode a job with the configured serializer, tagging the bytes with its format;
- decode each stored job with the serializer that wrote it, if its format is accepted;
- describe why a job could not be decoded, so the store can quarantine it (never delete it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from apscheduler.job import Job

from ._exceptions import DeserializationError, SerializationError, UnacceptedFormatError
from ._jobstate import job_to_state, state_to_job
from ._serializer import (
    Serializer,
    SerializerSpec,
    dump_state,
    format_name,
    is_pickle_family,
    load_state,
    resolve_serializer,
    stores_callables_by_value,
)

__all__ = ["UNTAGGED_FORMAT", "JobCodec", "quarantine_record", "unaccepted_formats_error"]

#: Documents without a format tag were written by the stock store: they are pickle.
UNTAGGED_FORMAT = "pickle"


class JobCodec:
    """Encodes jobs with one serializer and decodes them with every accepted one.

    :param serializer: the serializer new and updated jobs are written with
    :param accept: the formats this store decodes (names or serializer specs). Default: the
        configured format, plus untagged stock (pickle) documents for a pickle-family serializer.
    """

    def __init__(self, serializer: Serializer, accept: Iterable[SerializerSpec] | None = None):
        self.serializer = serializer
        self.format = format_name(serializer)
        self._by_value = stores_callables_by_value(serializer)
        #: the serializer writes UTF-8 text (``text = True``): stores may keep it as a string
        self.text = bool(getattr(serializer, "text", False))
        self.decoders: dict[str, Serializer] = {self.format: serializer}
        if accept is None:
            if is_pickle_family(serializer):
                self.decoders.setdefault(UNTAGGED_FORMAT, serializer)
        else:
            if isinstance(accept, (str, bytes)):
                raise TypeError(
                    f"accept must be a list of formats, got the string {accept!r}; write accept=[{accept!r}]"
                )
            for spec in accept:
                if isinstance(spec, str) and spec in self.decoders:
                    continue
                if spec == UNTAGGED_FORMAT and is_pickle_family(serializer):
                    self.decoders[UNTAGGED_FORMAT] = serializer
                    continue
                decoder = resolve_serializer(spec)
                self.decoders.setdefault(format_name(decoder), decoder)

    @property
    def accepted_formats(self) -> frozenset[str]:
        """The format names this codec decodes."""
        return frozenset(self.decoders)

    def accepts(self, fmt: str | None) -> bool:
        """True when documents tagged ``fmt`` (``None``: untagged) are decoded."""
        return (fmt or UNTAGGED_FORMAT) in self.decoders

    def encode(self, job: Job) -> bytes:
        """Encode a job's state with the configured serializer.

        :raises SerializationError: naming the job id; nothing should be written
        """
        state = job_to_state(job, by_value=self._by_value, format_name=self.format)
        try:
            return dump_state(self.serializer, state)
        except SerializationError as exc:
            raise SerializationError(f"job {job.id!r} cannot be stored: {exc}") from exc

    def decode(self, job_id: Any, fmt: str | None, data: bytes, scheduler: Any, alias: str | None) -> Job:
        """Decode a stored job with the serializer of its format and attach it to the scheduler.

        :raises DeserializationError: naming the job id and format
        """
        fmt = fmt or UNTAGGED_FORMAT
        decoder = self.decoders.get(fmt)
        if decoder is None:
            raise DeserializationError(
                f"job {job_id!r} is stored in format {fmt!r}, which this store does not accept "
                f"(accepts {sorted(self.decoders)}); add {fmt!r} to accept=[...] to read it"
            )
        try:
            state = load_state(decoder, data)
        except DeserializationError as exc:
            raise DeserializationError(f"job {job_id!r} ({fmt}): {exc}") from exc
        return state_to_job(state, scheduler, alias)


def quarantine_record(fmt: str | None, exc: BaseException, **extra: Any) -> dict[str, Any]:
    """Describe why a stored job could not be decoded: error type and message, format, time."""
    return {
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "cause": repr(exc.__cause__) if exc.__cause__ is not None else None,
        "format": fmt or UNTAGGED_FORMAT,
        "at": dt.datetime.now(dt.timezone.utc),
        **extra,
    }


def unaccepted_formats_error(where: str, counts: Mapping[str, int], codec: JobCodec) -> UnacceptedFormatError:
    """The error a store raises at start when it holds jobs in formats it does not accept."""
    listing = ", ".join(f"{fmt!r} ({n} job{'s' if n != 1 else ''})" for fmt, n in counts.items())
    accepted = sorted(codec.accepted_formats | set(counts))
    return UnacceptedFormatError(
        f"{where} holds jobs in formats this store does not accept: {listing}. Nothing was read "
        f"or changed. To read them, pass accept={accepted!r} (each job is rewritten in "
        f"{codec.format!r} when it is next updated), or point this store at another collection.",
        counts,
    )
