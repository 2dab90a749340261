"""The service's periodic sweeps (file expiry, state archiving, ...): one loop for all.

A pass that fails is logged and the next one comes (after a growing wait while
failures go on): an expected outage (``ServiceUnavailable``, or the backend's own errors
named by the caller) as a warning, anything else, a bug, with its traceback. Either way
the loop lives on for the process's life; only cancellation ends it. A sweep that died
silently would stop, say, archiving state or expiring files until the next restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .errors import ServiceUnavailable

__all__ = ["MAX_BACKOFF", "run_periodically"]

#: The longest wait between passes after failures in a row (seconds).
MAX_BACKOFF = 300.0


async def run_periodically(step: Callable[[], Awaitable[object]], interval: float, *,
                           what: str, logger: logging.Logger,
                           expected: tuple[type[Exception], ...] = (ServiceUnavailable,),
                           ) -> None:
    """Run ``step`` every ``interval`` seconds (first after one interval), until cancelled.
    After failures in a row the wait doubles, up to ``MAX_BACKOFF`` (or ``interval`` if
    longer): a lasting outage or bug is not logged several times a second."""
    failures = 0
    while True:
        await asyncio.sleep(min(interval * 2 ** min(failures, 30), max(interval, MAX_BACKOFF)))
        try:
            await step()
        except expected as exc:
            failures += 1
            logger.warning(f"{what} failed", extra={"error": str(exc), "failures": failures})
        except Exception:  # a bug must not end the loop for the process's life
            failures += 1
            logger.exception(f"{what} failed unexpectedly", extra={"failures": failures})
        else:
            failures = 0
