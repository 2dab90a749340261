"""The service's periodic sweeps (file expiry, state archiving, ...): one loop for all.

A pass that fails is logged and the next one comes at its interval: an expected outage
(``ServiceUnavailable``, or the backend's own errors named by the caller) as a warning,
anything else, a bug, with its traceback. Either way the loop lives on for the process's
life; only cancellation ends it. A sweep that died silently would stop, say, archiving
state or expiring files until the next restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .errors import ServiceUnavailable

__all__ = ["run_periodically"]


async def run_periodically(step: Callable[[], Awaitable[object]], interval: float, *,
                           what: str, logger: logging.Logger,
                           expected: tuple[type[Exception], ...] = (ServiceUnavailable,),
                           ) -> None:
    """Run ``step`` every ``interval`` seconds (first after one interval), until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except expected as exc:
            logger.warning(f"{what} failed",
                           extra={"error": getattr(exc, "message", None) or str(exc)})
        except Exception:  # a bug must not end the loop for the process's life
            logger.exception(f"{what} failed unexpectedly")
