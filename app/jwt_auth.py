"""Bearer JWTs: their configuration, identity and errors (no JWT library here).

The verifier itself (``app/jwt_verify.py``, PyJWT and cryptography) is imported only
when JWT keys are configured, so a service without JWTs does not pay for the
libraries at start-up. ``looks_like_jwt`` lets the caller tell a JWT from an API key.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

__all__ = ["JwtConfig", "JwtError", "JwtIdentity", "looks_like_jwt"]

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class JwtError(Exception):
    """A bearer JWT was refused; the message is safe to return to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen(kw_only=True)
class JwtConfig:
    """Where the verification keys come from (exactly one source) and what to expect."""

    public_key_pem: str | None = None  # PEM text, or the path of a PEM file
    jwks_path: Path | None = None
    keys_dir: Path | None = None
    issuer: str = "librechat"
    audience: str = "codeapi"
    leeway_seconds: int = 30
    default_tenant: str = "default"


@attrs.frozen
class JwtIdentity:
    """Who a verified token speaks for."""

    tenant: str
    user_id: str
    key_id: str | None


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the JWT shape: three base64url segments joined by dots."""
    return _JWT_SHAPE.fullmatch(token) is not None
