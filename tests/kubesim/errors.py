"""Status bodies, exactly as the apiserver writes them.

Every error the emulator answers is an ``ApiError`` carrying a ``metav1.Status``:
the same field order, reasons, messages and ``details`` as the apiserver's
``k8s.io/apimachinery/pkg/api/errors`` constructors produce, so a client that
parses them (kr8s ``ServerError.status``) sees what it would see on a cluster.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PATCH_REJECTED_MESSAGE",
    "ApiError",
    "already_exists",
    "bad_request",
    "conflict",
    "expired",
    "invalid",
    "method_not_allowed",
    "not_found",
    "patch_rejected",
    "status_body",
    "success_status",
]

#: ``NewGenericServerResponse(422, ...)``: what a failed JSON-patch ``test`` answers
#: (the patch library's own error text is dropped).
PATCH_REJECTED_MESSAGE = "the server rejected our request due to an error in our request"


def status_body(code: int, reason: str, message: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Failure ``Status`` in the apiserver's field order; ``details=None`` omits it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def success_status(name: str, group: str, plural: str, uid: str) -> dict[str, Any]:
    """The body of a DELETE of an object whose registry does not return it."""
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details.update(kind=plural, uid=uid)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


class ApiError(Exception):
    """An error answered as a Status object with an HTTP status code."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.body = body
        self.code = int(body["code"])


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(status_body(404, "NotFound",
                                f'{_qualified(group, plural)} "{name}" not found',
                                _details(name, group, plural)))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(status_body(409, "AlreadyExists",
                                f'{_qualified(group, plural)} "{name}" already exists',
                                _details(name, group, plural)))


def conflict(group: str, plural: str, name: str, why: str | None = None) -> ApiError:
    why = why or ("the object has been modified; please apply your changes to the "
                  "latest version and try again")
    return ApiError(status_body(
        409, "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
        _details(name, group, plural)))


def invalid(group: str, kind: str, name: str,
            causes: list[tuple[str, str]]) -> ApiError:
    """``NewInvalid``: ``causes`` are (field, message) pairs of FieldValueInvalid."""
    qualified = f"{kind}.{group}" if group else kind
    texts = [f"{field}: {message}" for field, message in causes]
    text = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(name, group, kind)
    details["causes"] = [{"reason": "FieldValueInvalid", "message": message, "field": field}
                         for field, message in causes]
    return ApiError(status_body(422, "Invalid", f'{qualified} "{name}" is invalid: {text}',
                                details))


def patch_rejected() -> ApiError:
    """A JSON patch that could not be applied (failed ``test``, missing path)."""
    return ApiError(status_body(422, "Invalid", PATCH_REJECTED_MESSAGE, {}))


def bad_request(message: str) -> ApiError:
    return ApiError(status_body(400, "BadRequest", message))


def expired(message: str) -> ApiError:
    """``NewResourceExpired``: 410 with reason ``Expired``."""
    return ApiError(status_body(410, "Expired", message))


def method_not_allowed(message: str = "the server does not allow this method on the "
                       "requested resource") -> ApiError:
    return ApiError(status_body(405, "MethodNotAllowed", message, {}))
