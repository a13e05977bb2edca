"""``signed+<inner>``: any serializer's bytes behind an HMAC-SHA256 signature.

Layout of the stored bytes::

    b"\\x01"  | id length (2 bytes, big-endian) | job id (UTF-8) | signature (32 bytes) | inner bytes

The signature covers the format name, the job id and the inner bytes, so a valid signature cannot be
moved to another job or relabelled as another format. It is checked, in constant time, before the
inner serializer sees a byte: a forged pickle is never unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Any

from .._exceptions import DeserializationError, SerializationError, SerializerConfigError
from .._resolve import resolve_serializer
from .._serializer import SerializerSpec, decoding_runs_code, format_name, stores_callables_by_value

__all__ = ["MIN_KEY_BYTES", "SignedSerializer"]

#: The shortest key taken: HMAC-SHA256 keys should have 32 random bytes; 16 is the floor.
MIN_KEY_BYTES = 16
_VERSION = b"\x01"
_ID_LENGTH = struct.Struct(">H")
_DIGEST = hashlib.sha256
_SIGNATURE_BYTES = _DIGEST().digest_size


class SignedSerializer:
    """Signs what ``inner`` writes with a key the application holds, and refuses what it did not sign.

    :param inner: any ``serializer=`` spec (``"pickle"``, ``"msgpack"``, an instance...)
    :param keys: signing keys (``bytes``, or ``str`` taken as UTF-8), **newest last**: the newest
        signs, any verifies. To rotate, append a new key, deploy, re-write the jobs (``jobshelf
        migrate``, or let updates do it), then drop the old key.
    """

    pickle_family = False

    def __init__(self, inner: SerializerSpec = "pickle", *, keys: Sequence[bytes | str]) -> None:
        if isinstance(keys, (bytes, str)) or not keys:
            raise SerializerConfigError("keys must be a non-empty list of keys, newest last")
        self._keys = tuple(key.encode("utf-8") if isinstance(key, str) else bytes(key) for key in keys)
        if any(len(key) < MIN_KEY_BYTES for key in self._keys):
            raise SerializerConfigError(
                f"every signing key needs at least {MIN_KEY_BYTES} bytes (32 random bytes recommended: "
                "python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        self.inner = resolve_serializer(inner)
        self.format_name = f"signed+{format_name(self.inner)}"
        self.stores_callables_by_value = stores_callables_by_value(self.inner)
        self.decoding_runs_code = decoding_runs_code(self.inner)  # after the signature verifies
        self.text = False
        self._label = self.format_name.encode("utf-8")

    def _signature(self, key: bytes, job_id: bytes, payload: bytes) -> bytes:
        mac = hmac.new(key, digestmod=_DIGEST)
        for part in (self._label, job_id):
            mac.update(_ID_LENGTH.pack(len(part)))
            mac.update(part)
        mac.update(payload)
        return mac.digest()

    def dumps(self, state: dict[str, Any], /) -> bytes:
        """Encode with the inner serializer and sign with the newest key."""
        job_id = state.get("id")
        if not isinstance(job_id, str):
            raise SerializationError(f"{self.format_name}: the state has no string id to sign")
        encoded_id = job_id.encode("utf-8")
        if len(encoded_id) > 0xFFFF:
            raise SerializationError(f"{self.format_name}: job id is longer than 65535 bytes")
        payload = self.inner.dumps(state)
        signature = self._signature(self._keys[-1], encoded_id, payload)
        return b"".join((_VERSION, _ID_LENGTH.pack(len(encoded_id)), encoded_id, signature, payload))

    def loads(self, data: bytes, /) -> dict[str, Any]:
        """Verify the signature with each key, then decode with the inner serializer.

        :raises DeserializationError: unsigned, truncated, tampered, or signed with an unknown key
        """
        job_id, payload = self.verified_payload(data)
        state = self.inner.loads(payload)
        if not isinstance(state, dict) or state.get("id") != job_id:
            raise DeserializationError(f"{self.format_name}: the signed id does not match the state's id")
        return state

    def verified_payload(self, data: bytes, /) -> tuple[str, bytes]:
        """The signed job id and the inner serializer's bytes, once the signature verifies.

        :raises DeserializationError: as :meth:`loads`
        """
        if data[:1] != _VERSION or len(data) < 1 + _ID_LENGTH.size:
            raise DeserializationError(f"{self.format_name}: the data is not signed (or is truncated)")
        (id_length,) = _ID_LENGTH.unpack_from(data, 1)
        start = 1 + _ID_LENGTH.size
        signature_at = start + id_length
        payload_at = signature_at + _SIGNATURE_BYTES
        if len(data) < payload_at:
            raise DeserializationError(f"{self.format_name}: the signed data is truncated")
        job_id = data[start:signature_at]
        signature = data[signature_at:payload_at]
        payload = data[payload_at:]
        expected = (self._signature(key, job_id, payload) for key in reversed(self._keys))
        if not any(hmac.compare_digest(signature, candidate) for candidate in expected):
            raise DeserializationError(
                f"{self.format_name}: the signature does not verify with any of the "
                f"{len(self._keys)} configured key(s): the job was changed or written without the key; "
                "it was not decoded"
            )
        return job_id.decode("utf-8", "replace"), payload

    def __repr__(self) -> str:
        return f"SignedSerializer({self.inner!r}, keys=<{len(self._keys)} key(s)>)"
