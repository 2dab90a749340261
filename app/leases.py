"""One replica at a time: a lease in Valkey for background sweeps whose effects must
happen once (a deleted object's bytes given back to its tenant's quota).

``async with lease.held() as mine:`` takes the lease if no replica holds it (``SET NX``
with an expiry, so a replica that dies while sweeping does not keep it) and gives it
back afterwards, only if it is still its own.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from .errors import ServiceUnavailable

__all__ = ["SweepLease"]

logger = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SweepLease:
    """A named lease that at most one replica holds, for at most ``seconds``."""

    def __init__(self, client: valkey.Valkey, name: str, seconds: int) -> None:
        self.key = f"k8si:lease:{name}"
        self._client = client
        self._seconds = seconds
        self._release = client.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[bool]:
        """True inside when this replica took the lease, False when another holds it."""
        token = secrets.token_hex(16)
        try:
            taken = bool(await self._client.set(self.key, token, nx=True, ex=self._seconds))
        except ValkeyError as exc:
            raise ServiceUnavailable("lease store unavailable", retry_after=2) from exc
        try:
            yield taken
        finally:
            if taken:
                try:
                    await self._release(keys=[self.key], args=[token])
                except ValkeyError as exc:  # it expires by itself: the next sweep waits
                    logger.warning("sweep lease not given back", extra={
                        "lease": self.key, "error": str(exc)})
