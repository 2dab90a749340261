"""Authentication: every request but ``/health`` (and the docs) presents a credential.

Accepted, one at a time: ``X-API-Key: <key>``; ``Authorization: Bearer <key>``;
``Authorization: Bearer <JWT>`` minted by LibreChat (``app.jwt_auth``); optionally
(``BODY_KEY_AUTH``) the key in the JSON body of an exec route, the only routes with a
JSON body (read for it within the route's own body limit: a larger body is a 413, never
buffered; any other route's body is never read here). Keys are held only as SHA-256 digests
and compared in constant time. Two different credentials in one request are a 400.
Every credential resolves to a tenant: ``API_KEYS`` entries are ``key`` (tenant
``default``) or ``tenant:key``; keys issued with ``k8si keys create`` live hashed in
Valkey; a JWT's tenant is its ``tenant_id`` claim. Failed attempts are counted per
client address (brute force → 429). After authentication ``admission.py`` checks
and counts every limit of the request in one Valkey round trip (the brute-force
guard, the rate limits, the tenant's execution quotas); an execution holds its
tenant's concurrency slot until it is over.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from .errors import BadRequest, ServiceUnavailable, Unauthorized
from .jwt_auth import JwtError, looks_like_jwt
from .tenants import KeyStore

if TYPE_CHECKING:
    from .admission import Admission
    from .jwt_verify import JwtVerifier

__all__ = ["V1_PREFIX", "AuthMiddleware", "Authenticator", "KeyRing", "Principal", "RequestGate",
           "api_path"]

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BODY_KEY_FIELDS = ("LIBRECHAT_CODE_API_KEY", "apiKey", "api_key")
#: Requests that run code: counted against the tenant's execution quotas.
_EXEC_PATHS = {"/exec", "/exec/stream", "/exec/programmatic"}
#: The routes whose JSON body may carry the key (``BODY_KEY_AUTH``): the exec routes.
_BODY_KEY_PATHS = _EXEC_PATHS | {"/exec/programmatic/cancel"}
#: Every route is also served under this prefix (LibreChat's documented base URL).
V1_PREFIX = "/v1"


def api_path(path: str) -> str:
    """The route's path without the ``/v1`` prefix (both name the same route)."""
    return path[len(V1_PREFIX):] if path.startswith(V1_PREFIX + "/") else path


@attrs.frozen
class Principal:
    """Who is calling: the tenant that owns everything the request touches."""

    tenant: str
    #: A stable, non-secret id of the credential (rate limits, logs).
    credential: str
    user_id: str | None = None
    #: May use the operator API (``ADMIN_API_KEYS``).
    admin: bool = False

    def acting_user(self, named: str | None) -> str | None:
        """The user a request acts for: the token's subject when the credential names one
        (a LibreChat JWT), whatever the body says; else the body's ``user_id``."""
        return self.user_id if self.user_id is not None else named


class KeyRing:
    """The configured API keys, held as (digest, tenant) pairs; admin keys flagged."""

    def __init__(self, entries: Iterable[str], admin_entries: Iterable[str] = ()) -> None:
        self._digests: list[tuple[bytes, str, bool]] = []
        self._add(admin_entries, admin=True)
        self._add(entries, admin=False)
        if not self._digests:
            raise ValueError("at least one API key is required")

    def _add(self, entries: Iterable[str], admin: bool) -> None:
        for entry in entries:
            tenant, sep, key = entry.partition(":")
            if not sep:
                tenant, key = DEFAULT_TENANT, entry
            if not _TENANT.fullmatch(tenant) or not key:
                raise ValueError("API_KEYS entries are 'key' or 'tenant:key' "
                                 "(tenant: 1-64 of [A-Za-z0-9_-])")
            self._digests.append((hashlib.sha256(key.encode()).digest(), tenant, admin))

    def lookup(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for known, tenant, admin in self._digests:  # no early exit: the time does not tell
            if hmac.compare_digest(known, digest) and found is None:
                found = Principal(tenant=tenant, credential="key:" + digest.hex()[:16],
                                  admin=admin)
        return found


def _header_credential(headers: Any) -> str | None:
    """The one credential in the headers (None when there is none)."""
    api_key: str | None = headers.get("x-api-key")
    authorization: str | None = headers.get("authorization")
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <key or token>'")
        bearer = token.strip()
    if api_key is not None and bearer is not None and not hmac.compare_digest(
            api_key.encode(), bearer.encode()):
        raise BadRequest("two different credentials (X-API-Key and Authorization) were sent")
    return api_key if api_key is not None else bearer


class Authenticator:
    """Turns a request's credential into a ``Principal``, or refuses it."""

    def __init__(self, keyring: KeyRing, jwt: JwtVerifier | None, body_key: bool) -> None:
        self.keyring = keyring
        self.jwt = jwt
        self.body_key = body_key

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any],
                           keys: KeyStore | None = None) -> Principal:
        credential = _header_credential(connection.headers)
        if credential is None and self.body_key:
            credential = await self._body_credential(connection)
        if not credential:
            raise Unauthorized("missing credentials: send X-API-Key or Authorization: Bearer")
        if self.jwt is not None and looks_like_jwt(credential):
            try:
                identity = self.jwt.verify(credential)
            except JwtError as exc:
                raise Unauthorized(f"invalid token: {exc.message}") from exc
            return Principal(tenant=identity.tenant, user_id=identity.user_id,
                             credential=f"jwt:{identity.tenant}:{identity.user_id}")
        principal = self.keyring.lookup(credential)
        if principal is None and keys is not None:
            record = await keys.lookup(credential)
            if record is not None:
                principal = Principal(tenant=record.tenant, credential=f"key:{record.id}")
        if principal is None:
            raise Unauthorized("invalid API key")
        return principal

    @staticmethod
    async def _body_credential(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        """The key in the JSON body of an exec route; None on any other request.

        Only a body the route itself would read is read, and within the route's own
        limit (the exec body limit): Litestar refuses a larger one with a 413 from its
        declared length before reading any of it, or once the bytes read pass the
        limit. A route without a limit (uploads) is never one of these.
        """
        media_type = connection.headers.get("content-type", "").split(";")[0]
        if (connection.scope.get("method") != "POST"
                or api_path(connection.scope["path"]) not in _BODY_KEY_PATHS
                or media_type.strip().lower() != "application/json"
                or connection.route_handler.resolve_request_max_body_size() is None):
            return None
        request: Request[Any, Any, Any] = Request(connection.scope, connection.receive)
        try:
            body = orjson.loads(await request.body())  # cached: the handler reads it again
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict):
            return None
        keys = [body[f] for f in _BODY_KEY_FIELDS if isinstance(body.get(f), str)]
        if len(set(keys)) > 1:
            raise BadRequest("two different credentials were sent in the body")
        return keys[0] if keys else None


def _public_path(scope: Scope) -> bool:
    path: str = scope["path"]
    return api_path(path) == "/health" or path == "/schema" or path.startswith("/schema/")


class RequestGate:
    """What the auth middleware needs from the running app, wired once in ``create_app``.

    The middleware is built with the app, before the lifespan has connected Valkey; the
    lifespan ``attach``es the admission and the issued-key store. A request that comes
    before that (or after shutdown) is refused with a 503, never let through unchecked.
    """

    def __init__(self) -> None:
        self._parts: tuple[Admission, KeyStore] | None = None

    def attach(self, admission: Admission, key_store: KeyStore) -> None:
        self._parts = (admission, key_store)

    def detach(self) -> None:
        self._parts = None

    def parts(self) -> tuple[Admission, KeyStore]:
        if self._parts is None:
            raise ServiceUnavailable("the service is starting or stopping", retry_after=1)
        return self._parts


class AuthMiddleware(ASGIMiddleware):
    """Sets ``request.user`` to the caller's ``Principal`` and admits the request."""

    scopes = (ScopeType.HTTP,)
    exclude_opt_key = "exclude_from_auth"
    # Liveness and the API documentation are public; nothing else is.
    should_bypass_for_scope = staticmethod(_public_path)

    def __init__(self, authenticator: Authenticator, gate: RequestGate) -> None:
        self.authenticator = authenticator
        self.gate = gate

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     next_app: ASGIApp) -> None:
        # A full Request (with receive): the body key, if enabled, is read (an exec
        # route's body, within its limit) and cached for the handler.
        request: Request[Any, Any, Any] = Request(scope, receive)
        admission, key_store = self.gate.parts()
        # The peer's own address only: forwarded headers are never trusted here.
        address = request.client.host if request.client else "unknown"
        try:
            principal = await self.authenticator.authenticate(request, key_store)
        except Unauthorized:
            await admission.failed(address)  # 429 instead when the address is blocked
            raise
        runs_code = request.method == "POST" and api_path(scope["path"]) in _EXEC_PATHS
        slot = await admission.admit(address, principal.tenant, principal.credential,
                                     runs_code)
        scope["user"] = principal
        scope["auth"] = principal.credential
        try:
            await next_app(scope, receive, send)
        finally:
            if slot is not None:
                await admission.leave(slot)
