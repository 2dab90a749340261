"""Execution profiles: which kind of execution a request expects, and which served it.

LibreChat's client sends ``X-CodeAPI-Expected-Profile: default|stateful`` on the exec
routes. ``default`` is ``/exec`` as it is (a fresh sandbox per execution);
``stateful`` is an execution in a sandbox kept per conversation (runtime sessions,
``app/runtime_sessions``; the local backend only, for now). ``EXECUTION_PROFILES``
says which profiles this deployment serves.

``ExecutionProfiles`` is an ASGI middleware on the exec routes (``/exec``,
``/exec/stream``, ``/exec/programmatic``, ``/exec/programmatic/cancel`` and their
``/v1`` forms). Before anything else (authentication, admission, the body) it reads
the expected profile: absent means ``default`` (old clients); given twice, or a name
that is no profile, is 400 ``invalid_execution_profile``; a profile this deployment
does not serve is 409 ``execution_profile_mismatch``, the code the client turns into a
permanent, model-readable refusal instead of retries. A refusal reveals only which
profiles the deployment serves. ``advertise_profile`` (a ``before_send`` hook, so it
sees error answers too) puts ``X-CodeAPI-Execution-Profile`` on every answer of those
routes: the profile that served the request, or on a refusal (or an answer given
before the middleware ran) the one a request without the header gets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .auth import api_path
from .errors import InvalidExecutionProfile, ProfileMismatch, ServiceError
from .settings import EXECUTION_PROFILES as PROFILES

__all__ = ["EXECUTION_PROFILE_HEADER", "EXPECTED_PROFILE_HEADER", "PROFILES",
           "ExecutionProfiles", "advertise_profile", "choose_profile", "is_exec_route",
           "served_profile"]

EXPECTED_PROFILE_HEADER = "X-CodeAPI-Expected-Profile"
EXECUTION_PROFILE_HEADER = "X-CodeAPI-Execution-Profile"
logger = logging.getLogger(__name__)

_EXPECTED = EXPECTED_PROFILE_HEADER.lower().encode()
_SERVED_BY = EXECUTION_PROFILE_HEADER.lower().encode()
_STATE_KEY = "execution_profile"
_EXEC_ROOT = "/exec"


def served_profile(scope: Scope) -> str:
    """The profile serving this request (set by ``ExecutionProfiles``; else ``default``)."""
    profile = scope.get("state", {}).get(_STATE_KEY)
    return profile if isinstance(profile, str) else "default"


def is_exec_route(path: str) -> bool:
    """``/exec`` and everything under it, with or without the ``/v1`` prefix."""
    route = api_path(path).rstrip("/")
    return route == _EXEC_ROOT or route.startswith(_EXEC_ROOT + "/")


def fallback_profile(served: Sequence[str]) -> str:
    """The profile a request without ``X-CodeAPI-Expected-Profile`` asks for."""
    return "default" if "default" in served else served[0]


def choose_profile(expected: Sequence[str], served: Sequence[str]) -> str:
    """The profile serving a request whose ``X-CodeAPI-Expected-Profile`` values are
    ``expected`` (none: ``default``); ``InvalidExecutionProfile`` or ``ProfileMismatch``."""
    actual = fallback_profile(served)
    extra = {"actual_profile": actual, "available_profiles": list(served)}
    if len(expected) > 1:
        raise InvalidExecutionProfile(
            f"{EXPECTED_PROFILE_HEADER} must be given once, got {len(expected)} values",
            extra={"expected_profile": ",".join(v[:64] for v in expected), **extra})
    wanted = expected[0].strip() if expected else "default"
    if wanted not in PROFILES:
        raise InvalidExecutionProfile(
            f"{EXPECTED_PROFILE_HEADER} must be one of {', '.join(PROFILES)}, "
            f"got {wanted[:64]!r}", extra={"expected_profile": wanted[:64], **extra})
    if wanted not in served:
        raise ProfileMismatch(
            f"Expected the {wanted} execution profile, but this deployment serves "
            f"{', '.join(served)}", extra={"expected_profile": wanted, **extra})
    return wanted


class ExecutionProfiles(ASGIMiddleware):
    """Refuses an exec request whose expected profile is not served; notes the chosen one."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, served: Sequence[str]) -> None:
        self.served = tuple(served)

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     next_app: ASGIApp) -> None:
        if is_exec_route(scope["path"]):
            expected = [value.decode("latin-1") for name, value in scope["headers"]
                        if name.lower() == _EXPECTED]
            try:
                profile = choose_profile(expected, self.served)
            except ServiceError as exc:  # answered by errors.py; noted for operators
                logger.info("execution profile refused", extra={
                    "error": exc.code, "expected_profile": exc.extra.get("expected_profile"),
                    "served": list(self.served)})
                raise
            scope.setdefault("state", {})[_STATE_KEY] = profile
        await next_app(scope, receive, send)


def advertise_profile(served: Sequence[str]) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook: ``X-CodeAPI-Execution-Profile`` on every exec answer."""
    fallback = fallback_profile(served).encode()

    async def hook(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP \
                or not is_exec_route(scope["path"]):
            return
        profile = scope.get("state", {}).get(_STATE_KEY)
        value = profile.encode() if isinstance(profile, str) else fallback
        message["headers"] = [*message.get("headers", []), (_SERVED_BY, value)]

    return hook
