"""Authentication: every request but ``/health`` presents an API key.

Accepted: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Keys are kept
only as SHA-256 digests and compared in constant time. Two different credentials in
one request are refused (400) rather than guessed between. Every key resolves to a
tenant; static keys from ``API_KEYS`` belong to the ``default`` tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import attrs
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Method, Scopes

from .errors import BadRequest, Unauthorized

__all__ = ["ApiKeyMiddleware", "KeyRing", "Principal"]

DEFAULT_TENANT = "default"


@attrs.frozen
class Principal:
    """Who is calling: the tenant that owns everything the request touches."""

    tenant: str
    key_id: str


class KeyRing:
    """The configured API keys, held as digests."""

    def __init__(self, keys: Iterable[str], tenant: str = DEFAULT_TENANT) -> None:
        self._digests = [(hashlib.sha256(k.encode()).digest(), tenant) for k in keys]
        if not self._digests:
            raise ValueError("at least one API key is required")

    def lookup(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for known, tenant in self._digests:  # no early exit: the time does not tell
            if hmac.compare_digest(known, digest):
                found = Principal(tenant=tenant, key_id=digest.hex()[:12])
        return found


def presented_key(headers: Any) -> str:
    """The one credential in the request's headers, or an error saying what is wrong."""
    api_key: str | None = headers.get("x-api-key")
    authorization: str | None = headers.get("authorization")
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <key>'")
        bearer = token.strip()
    if api_key is not None and bearer is not None and api_key != bearer:
        raise BadRequest("two different credentials (X-API-Key and Authorization) were sent")
    key = api_key if api_key is not None else bearer
    if not key:
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    return key


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the caller to a ``Principal`` (``request.user``) or answers 401/400."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, exclude: list[str],
                 scopes: Scopes | None = None,
                 exclude_http_methods: list[Method] | None = None) -> None:
        super().__init__(app, exclude=exclude, scopes=scopes,
                         exclude_http_methods=exclude_http_methods or ["OPTIONS"])
        self.keyring = keyring

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any],
                                   ) -> AuthenticationResult:
        principal = self.keyring.lookup(presented_key(connection.headers))
        if principal is None:
            raise Unauthorized("invalid API key")
        return AuthenticationResult(user=principal, auth=principal.key_id)
