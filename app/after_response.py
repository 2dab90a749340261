"""Work that waits until the current response is sent: recycling a used sandbox.

Destroying a sandbox and starting its replacement cost CPU and some event-loop time;
done while the request is still being answered, they delay the answer on a two-core
machine. ``AfterResponse``, wired once in ``create_app`` around every HTTP request,
opens the request's ``Deferred`` scope; code below it (a backend's ``release``, the
exec service's record of a finished execution) calls ``defer(start)``, and ``start``
runs once the response's last byte has been handed to the server — for every route
alike (``/exec``, its keep-alive and SSE forms, ``/exec/programmatic``) and every
backend. A request that fails, or whose client goes away, runs its work when the
handler is done: nothing deferred is ever dropped. Outside a request (a reaper, a
lease timer) ``defer`` runs the work at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AfterResponse", "Deferred", "defer"]

_CURRENT: ContextVar[Deferred | None] = ContextVar("k8si_deferred", default=None)


def defer(start: Callable[[], object]) -> None:
    """Call ``start`` once the current response is sent (at once outside a request)."""
    scope = _CURRENT.get()
    if scope is None or scope.ran:
        start()
    else:
        scope.items.append(start)


class Deferred:
    """The deferred work of one request."""

    def __init__(self) -> None:
        self.items: list[Callable[[], object]] = []
        self.ran = False

    def run_now(self) -> None:
        """Start everything deferred (once); later ``defer`` calls run at once."""
        if self.ran:
            return
        self.ran = True
        items, self.items = self.items, []
        for start in items:
            start()


class AfterResponse(ASGIMiddleware):
    """Every HTTP request gets a ``Deferred`` scope, run after its response is sent."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     next_app: ASGIApp) -> None:
        deferred = Deferred()
        token = _CURRENT.set(deferred)

        async def sending(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                deferred.run_now()  # the last byte is out: the deferred work may start

        try:
            await next_app(scope, receive, sending)
        finally:
            _CURRENT.reset(token)
            deferred.run_now()  # a failed request, or a client that went away
