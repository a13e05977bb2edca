"""The format table: the configured format, the accepted ones, and the decoder of each.

A stored format tag is only ever looked up here, among the formats the store was configured
with: stored data never reaches :func:`~jobshelf.resolve_serializer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable

from .._exceptions import DeserializationError, UnacceptedFormatError
from .._resolve import resolve_serializer
from .._serializer import (
    RestrictedReading,
    Serializer,
    SerializerSpec,
    format_name,
    is_pickle_family,
    stores_callables_by_value,
)

__all__ = ["UNTAGGED_FORMAT", "Format", "FormatTable", "is_tag"]

#: Documents without a format tag were written by the stock store: they are pickle.
UNTAGGED_FORMAT = "pickle"


class Format:
    """One accepted format: its serializer, its decoder, and what the store needs to know about it."""

    __slots__ = ("by_value", "decoder", "name", "serializer", "text")

    def __init__(self, serializer: Serializer, name: str | None = None) -> None:
        self.serializer = serializer
        self.decoder: Callable[[bytes], dict[str, Any]] = serializer.loads
        self.name = name or format_name(serializer)
        self.by_value = stores_callables_by_value(serializer)
        self.text = bool(getattr(serializer, "text", False))

    def restrict(self, allows_global: Callable[[str, str], bool]) -> None:
        """Read through the serializer's restricted reader (pickle family under an allow-list)."""
        serializer = self.serializer
        if isinstance(serializer, RestrictedReading):

            def restricted(data: bytes) -> dict[str, Any]:
                return serializer.loads_restricted(data, allows_global)

            self.decoder = restricted


class FormatTable:
    """The configured format and every accepted one, by name."""

    def __init__(self, serializer: Serializer, accept: Iterable[SerializerSpec] | None) -> None:
        self.configured = Format(serializer)
        self._formats: dict[str, Format] = {self.configured.name: self.configured}
        if accept is None:
            if is_pickle_family(serializer):
                self._formats.setdefault(UNTAGGED_FORMAT, Format(serializer, UNTAGGED_FORMAT))
            return
        if isinstance(accept, (str, bytes)):
            parts = [part.strip() for part in str(accept).split(",") if part.strip()]
            raise TypeError(
                f"accept must be a list of formats, got the string {accept!r}; write accept={parts!r}"
            )
        for spec in accept:
            if isinstance(spec, str) and spec in self._formats:
                continue
            if spec == UNTAGGED_FORMAT and is_pickle_family(serializer):
                self._formats[UNTAGGED_FORMAT] = Format(serializer, UNTAGGED_FORMAT)
                continue
            decoder = Format(resolve_serializer(spec))
            self._formats.setdefault(decoder.name, decoder)

    def restrict(self, allows_global: Callable[[str, str], bool]) -> None:
        """Read every pickle-family format through its restricted reader."""
        for accepted in self._formats.values():
            accepted.restrict(allows_global)

    @property
    def names(self) -> frozenset[str]:
        """The accepted format names."""
        return frozenset(self._formats)

    def get(self, fmt: Any) -> Format | None:
        """The accepted format of a stored tag (``None``: untagged), or ``None``."""
        if not is_tag(fmt):
            return None
        return self._formats.get(UNTAGGED_FORMAT if fmt is None else fmt)

    def accepts(self, fmt: Any) -> bool:
        """True when rows tagged ``fmt`` (``None``: untagged) are decoded."""
        return self.get(fmt) is not None

    def decoder_for(self, fmt: Any, job_id: Any) -> Format:
        """The format to decode a row tagged ``fmt`` with.

        :raises DeserializationError: a malformed tag, or a format not accepted
        """
        if not is_tag(fmt):
            raise DeserializationError(f"job {job_id!r} has a malformed format tag {short_repr(fmt)}")
        found = self.get(fmt)
        if found is None:
            raise DeserializationError(
                f"job {job_id!r} is stored in format {fmt!r}, which this store does not accept "
                f"(accepts {sorted(self._formats)}); add {fmt!r} to accept=[...] to read it"
            )
        return found

    def unaccepted_error(self, where: str, counts: Mapping[str, int]) -> UnacceptedFormatError:
        """The error ``start()`` raises for jobs in formats outside ``accept``."""
        listing = ", ".join(f"{fmt!r} ({n} job{'s' if n != 1 else ''})" for fmt, n in counts.items())
        accepted = sorted(self.names | set(counts))
        return UnacceptedFormatError(
            f"{where} holds jobs in formats this store does not accept: {listing}. Nothing "
            f"was read or changed. To read them, pass accept={accepted!r} (each job is rewritten in "
            f"{self.configured.name!r} when it is next updated), or point this store at another "
            "collection.",
            counts,
        )


def is_tag(fmt: Any) -> bool:
    """A well-formed stored format tag: a string, or ``None`` (untagged)."""
    return fmt is None or type(fmt) is str


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
