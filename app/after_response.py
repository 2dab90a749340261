"""Work that waits until the current response is sent: recycling a used sandbox.

Destroying a sandbox and starting its replacement cost CPU and some event-loop
time; done while the request is still being answered, they delay the answer on a
two-core machine. A route handler opens ``Deferred()`` around its work and hands
``deferred.run`` to the response as its background task; code below it (a
backend's ``release``) calls ``defer(start)``: inside such a scope ``start`` runs
once the response is on the wire, anywhere else at once. A scope left by an
exception runs its work at once, and a safety timer runs it if the response
never does: nothing deferred is ever dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType

__all__ = ["Deferred", "defer"]

#: Seconds after which deferred work starts even if the response never ran it.
SAFETY_DELAY = 2.0

_CURRENT: ContextVar[Deferred | None] = ContextVar("k8si_deferred", default=None)


def defer(start: Callable[[], object]) -> None:
    """Call ``start`` once the current response is sent (now, outside a ``Deferred``)."""
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
        self._token: Token[Deferred | None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Deferred:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        if kind is not None:
            self.run_now()
        elif self.items:
            self._timer = asyncio.get_running_loop().call_later(SAFETY_DELAY, self.run_now)

    def run_now(self) -> None:
        """Start everything deferred (once)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.ran:
            return
        self.ran = True
        items, self.items = self.items, []
        for start in items:
            start()

    async def run(self) -> None:
        """The response's background task."""
        self.run_now()
