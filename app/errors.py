"""Typed errors of the service and the one place that maps them to HTTP.

Modules raise ``ServiceError`` subclasses; ``exception_handlers`` turns each into
the contract's JSON body ``{"error": code, "message": text}`` with its status.
User-code failures are not errors: they are 200 results.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

__all__ = [
    "BadRequest",
    "ErrorBody",
    "ExecutorFailed",
    "InputsTooLarge",
    "InvalidExecutionProfile",
    "InvalidState",
    "LanguageUnavailable",
    "NoCapacity",
    "NotFound",
    "PayloadTooLarge",
    "ProfileMismatch",
    "RateLimited",
    "ServiceError",
    "ServiceUnavailable",
    "StateTooLarge",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_responses",
    "exception_handlers",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error the API answers with a JSON error body."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None,
                 extra: dict[str, Any] | None = None, detail: str | None = None) -> None:
        # ``str(exc)`` (what logs show) adds the detail; ``message`` is what is answered.
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.retry_after = retry_after
        self.extra = extra or {}
        #: The cause's own words (a store's or cluster's error: paths, endpoints):
        #: logged, never answered.
        self.detail = detail


class BadRequest(ServiceError):
    status_code, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


class NotFound(ServiceError):
    status_code, code = 404, "not_found"


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


class InputsTooLarge(PayloadTooLarge):
    """The files of a request do not fit in the sandbox's work dir."""


class StateTooLarge(PayloadTooLarge):
    """A Python state blob over the compressed or the declared decompressed size cap."""

    code = "state_too_large"


class InvalidState(BadRequest):
    """A state blob of the wrong format, or one that fails its integrity check."""

    code = "invalid_state"


class InvalidExecutionProfile(BadRequest):
    """``X-CodeAPI-Expected-Profile`` names no profile, or is given twice."""

    code = "invalid_execution_profile"


class ProfileMismatch(ServiceError):
    """The request expects an execution profile this deployment does not serve (the
    client's permanent capability refusal, never retried)."""

    status_code, code = 409, "execution_profile_mismatch"


class InvalidRuntimeSessionHint(BadRequest):
    """``runtime_session_hint`` is not 1-128 characters of ``[A-Za-z0-9._:-]``."""

    code = "invalid_runtime_session_hint"


class UnsupportedMediaType(ServiceError):
    status_code, code = 415, "unsupported_media_type"


class RateLimited(ServiceError):
    """Too many requests in the window; the body carries ``retry_after_seconds``."""

    status_code, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after,
                         extra={"retry_after_seconds": retry_after})


class RuntimeSessionBusy(RateLimited):
    """Another execution of the same runtime session ran for longer than the queue
    timeout (one execution at a time per runtime session)."""

    code = "runtime_session_busy"


class LanguageUnavailable(ServiceError):
    """The language exists but its toolchain is not installed on this deployment."""

    status_code, code = 400, "language_unavailable"


class ServiceUnavailable(ServiceError):
    """A dependency (Valkey, the sandbox backend) cannot serve the request now."""

    status_code, code = 503, "service_unavailable"


class NoCapacity(ServiceUnavailable):
    """Every execution slot is busy for longer than the queue timeout."""

    code = "no_capacity"


class RuntimeSessionsUnsupported(ServiceError):
    """This backend keeps no sandboxes between executions (the ``stateful`` profile
    cannot be served with it): LibreChat's ``stateful_workspace_unsupported``."""

    status_code, code = 409, "stateful_workspace_unsupported"


class ExecutorFailed(ServiceUnavailable):
    """The sandbox died or answered nonsense (not the user's program failing)."""

    code = "sandbox_failed"


@attrs.frozen
class ErrorBody:
    """The body of every error answer (documented in the OpenAPI schema)."""

    error: str
    message: str
    #: Only on 429: seconds until the rate-limit window ends (also ``Retry-After``).
    retry_after_seconds: int | None = None


_DESCRIPTIONS = {
    400: "Bad request (malformed input, invalid names or ids, unknown language)",
    401: "Missing or invalid credentials",
    404: "Unknown id (another tenant's ids answer the same)",
    409: "The expected execution profile (X-CodeAPI-Expected-Profile) is not served here",
    413: "Too large (code, upload, args, state)",
    415: "Wrong content type",
    429: "Rate limited (see retry_after_seconds and Retry-After)",
    503: "Temporarily unavailable (no capacity, sandbox or store failure); see Retry-After",
}


def error_responses(*extra: int, auth: bool = True) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors a route can answer: always 400/503, plus ``extra``."""
    codes = {400, 503, *extra} | ({401, 429} if auth else set())
    return {code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code])
            for code in sorted(codes)}


def _body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code == 413:
        # The rest of the body was not read: do not keep a connection fed by an
        # endless upload; closing it stops the sender.
        headers["Connection"] = "close"
    if exc.status_code >= 500:
        logger.warning("request failed", extra={"error": exc.code, "detail": str(exc)})
    return Response(_body(exc.code, exc.message, **exc.extra), status_code=exc.status_code,
                    headers=headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    details = exc.extra if isinstance(exc.extra, list) else None
    message = "; ".join(f"{d.get('key', 'body')}: {d.get('message')}" for d in details or []
                        if isinstance(d, dict)) or exc.detail
    return Response(_body("bad_request", message), status_code=400)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


def _too_large(request: Request[Any, Any, Any]) -> str:
    """The 413 of a body over the route's size limit, naming the limit."""
    limit = request.route_handler.resolve_request_max_body_size()
    settings = getattr(request.app.state, "settings", None)
    code_size = getattr(settings, "max_code_size", None)
    message = f"the request body is larger than {limit} bytes"
    if code_size is not None and limit is not None and limit > code_size:
        message += (f" (MAX_CODE_SIZE is {code_size} bytes of code, plus "
                    f"{limit - code_size} bytes for the rest of the request)")
    return message


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = _too_large(request) if exc.status_code == 413 else exc.detail
    return Response(_body(code, message), status_code=exc.status_code,
                    headers=exc.headers or None)


def _too_deep(_: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # Only input decoding recurses without bound (msgspec on absurdly nested JSON).
    return Response(_body("bad_request", "request body nested too deeply"), status_code=400)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled error", exc_info=exc)
    return Response(_body("internal_error", "internal server error"), status_code=500)


exception_handlers: dict[type[Exception], Any] = {
    ServiceError: _service_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    RecursionError: _too_deep,
    Exception: _unexpected,
}
