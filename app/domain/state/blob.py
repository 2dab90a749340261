"""State blobs as the API sees them: opaque bytes with a format check and a signature.

Format (written and read only inside sandboxes, by ``sidecar/pystate.py``): one
version byte, then an lz4 frame of a cloudpickle. The API never unpickles and never
decompresses a blob. It checks the version byte, the lz4 frame's magic number and,
when the frame header declares it, the decompressed size (read from the header, no
decompression); the executor enforces the decompressed cap inside the sandbox.

Every stored blob carries an HMAC-SHA256 over (tenant, session, format version,
SHA-256 of the blob) under a key the sandboxes never see: a blob changed in Valkey
or the object store, put there by hand, or copied from another session fails the
check and never reaches a sandbox. The key is ``STATE_HMAC_KEY``, or one generated
once into ``DATA_DIR/state-key`` (mode 0600); replicas must share it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from sidecar.contract import STATE_FORMAT_VERSION as FORMAT_VERSION
from sidecar.contract import STATE_LZ4_MAGIC as LZ4_MAGIC

from ...errors import InvalidState, StateTooLarge
from ...shared_secret import StateKeyError, load_key

__all__ = ["FORMAT_VERSION", "StateKeyError", "StateSigner", "check_format", "load_key"]

_CONTENT_SIZE_FLAG = 0x08


def check_format(blob: bytes, max_bytes: int, max_raw_bytes: int) -> None:
    """``StateTooLarge`` (413) or ``InvalidState`` (400) unless ``blob`` may be stored."""
    if len(blob) > max_bytes:
        raise StateTooLarge(f"the state is larger than {max_bytes} bytes")
    if len(blob) < 1 + 7:  # version byte, magic, FLG, BD, header checksum
        raise InvalidState("the state is too short to be a state blob")
    if blob[0] != FORMAT_VERSION:
        raise InvalidState(f"unknown state format version {blob[0]} (expected {FORMAT_VERSION})")
    if blob[1:5] != LZ4_MAGIC:
        raise InvalidState("the state is not an lz4 frame after its version byte")
    flags = blob[5]
    if flags >> 6 != 1:
        raise InvalidState("unsupported lz4 frame version")
    if flags & _CONTENT_SIZE_FLAG:
        if len(blob) < 1 + 4 + 2 + 8:
            raise InvalidState("the lz4 frame header is truncated")
        (declared,) = struct.unpack("<Q", blob[7:15])
        if declared > max_raw_bytes:
            raise StateTooLarge(f"the state declares {declared} bytes once decompressed, more "
                                f"than the limit of {max_raw_bytes}")


class StateSigner:
    """Signs and checks the binding of a blob to its (tenant, session)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, tenant: str, session_id: str, version: int, sha256: str) -> str:
        message = b"\0".join((b"k8si-state", tenant.encode(), session_id.encode(),
                              str(version).encode(), sha256.encode()))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, tenant: str, session_id: str, blob: bytes) -> tuple[str, str]:
        """``(sha256, signature)`` of ``blob`` for this session."""
        sha256 = hashlib.sha256(blob).hexdigest()
        return sha256, self._mac(tenant, session_id, blob[0] if blob else -1, sha256)

    def verify(self, tenant: str, session_id: str, blob: bytes, sha256: str,
               signature: str) -> bool:
        """True only for a blob signed for exactly this (tenant, session), unchanged."""
        actual = hashlib.sha256(blob).hexdigest()
        expected = self._mac(tenant, session_id, blob[0] if blob else -1, actual)
        return hmac.compare_digest(actual, sha256) & hmac.compare_digest(expected, signature)
