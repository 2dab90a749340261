"""Continuation tokens: where a paused programmatic run lives, signed, for one use.

A token is ``k8si-ptc1.<payload>.<mac>`` (base64url, no padding). The payload names
the tenant and session it is bound to, the run (its record in Valkey), a nonce that
makes it single-use (``RunStore.use_nonce``), where the paused sandbox lives
(local: its id; Kubernetes: ``pod/<name>/<ip>``), the language, the round and the
lease's end. The MAC is HMAC-SHA256 under a key derived from ``STATE_HMAC_KEY``
(``DATA_DIR/state-key``), which every replica shares and no sandbox sees: a token is
accepted by any replica, and one that was changed, forged, or shown by another
tenant reads exactly like an unknown one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import attrs
import orjson

__all__ = ["Continuation", "ContinuationTokens", "TokenRefused"]

_PREFIX = "k8si-ptc1"
_MAX_TOKEN = 4096


class TokenRefused(Exception):
    """A continuation token that cannot be used; the message is the client's to read."""


@attrs.frozen
class Continuation:
    """What a continuation token says."""

    tenant: str
    session_id: str
    run_id: str
    nonce: str
    location: str
    lang: str
    round: int
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ContinuationTokens:
    """Issues and reads continuation tokens."""

    def __init__(self, state_key: bytes) -> None:
        # Its own key, derived: a state signature can never pass for a token's.
        self._key = hmac.new(state_key, b"k8si programmatic continuation tokens",
                             hashlib.sha256).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{_PREFIX}.{payload}".encode(),
                             hashlib.sha256).digest())

    def issue(self, continuation: Continuation) -> str:
        payload = _b64(orjson.dumps(attrs.asdict(continuation)))
        return f"{_PREFIX}.{payload}.{self._mac(payload)}"

    def read(self, token: str, tenant: str) -> Continuation:
        """The continuation, for this tenant only; ``TokenRefused`` otherwise."""
        unknown = TokenRefused("unknown continuation token")
        parts = token.split(".") if isinstance(token, str) and len(token) <= _MAX_TOKEN else []
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise unknown
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        if not hmac.compare_digest(self._mac(parts[1]).encode(),
                                   parts[2].encode("utf-8", "surrogatepass")):
            raise unknown
        try:
            continuation = Continuation(**orjson.loads(_unb64(parts[1])))
        except (binascii.Error, ValueError, TypeError) as exc:
            raise unknown from exc
        if not hmac.compare_digest(continuation.tenant.encode(), tenant.encode()):
            raise unknown  # another tenant's token reads like an unknown one
        if continuation.expires_at < time.time():
            raise TokenRefused("the continuation token expired: the paused run's lease "
                               "ended and its sandbox was reaped")
        return continuation
