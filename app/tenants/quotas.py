"""Per-tenant storage quotas, atomic across replicas (one Valkey script per change).

Stored bytes and file count: reserved before a file is stored, given back when it is
deleted or expires; a session's Python state counts its bytes too (no file), resized
with each run. Each charge is kept in a ledger under the stored object's own key
(``file_charge``, ``blob_charge``), so counting is idempotent: reserving an object
already counted adds nothing, and giving one back twice (two concurrent DELETEs of
one file, a sweep and a DELETE, two sweeps) gives it back once. Usage counted before
the ledger existed is given back by the size the caller names, never below zero,
until the tenant's usage is next zero; from then on only the ledger counts. (The
tenant's execution quotas, per window and concurrent, are checked with every other
per-request limit in ``admission.py``.)
"""

from __future__ import annotations

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import PayloadTooLarge, ServiceUnavailable
from ..settings import TenantSettings

__all__ = ["QuotaExceeded", "TenantQuotas", "blob_charge", "file_charge", "state_charge"]

# KEYS: 1 the tenant's usage (hash: bytes, files, ledger), 2 its ledger (hash: object
#       key -> "bytes files"). ARGV: 1 object key, 2 bytes, 3 files, 4 max bytes,
#       5 max files (0: no limit), 6 "new" (count it only if it is not counted yet) or
#       "resize" (its charge becomes ARGV 2/3: a session's state, replaced by each run).
# Growth is checked against the limits. Returns 1 counted, 2 already counted ("new"),
# 0 refused (the old charge stands).
_CHARGE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and ARGV[6] == 'new' then return 2 end
local old_bytes, old_files = 0, 0
if old then
  local space = string.find(old, ' ')
  old_bytes = tonumber(string.sub(old, 1, space - 1))
  old_files = tonumber(string.sub(old, space + 1))
end
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local add_bytes = tonumber(ARGV[2]) - old_bytes
local add_files = tonumber(ARGV[3]) - old_files
local max_bytes, max_files = tonumber(ARGV[4]), tonumber(ARGV[5])
if add_bytes > 0 and max_bytes > 0 and bytes + add_bytes > max_bytes then return 0 end
if add_files > 0 and max_files > 0 and files + add_files > max_files then return 0 end
if bytes == 0 and files == 0 then redis.call('HSET', KEYS[1], 'ledger', '1') end
redis.call('HINCRBY', KEYS[1], 'bytes', add_bytes)
redis.call('HINCRBY', KEYS[1], 'files', add_files)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
return 1
"""

# KEYS as above. ARGV: 1 object key, 2 bytes, 3 files (what it counted before the
# ledger, if it is not in it). Returns 1 given back, 0 nothing to give back.
_RELEASE = """
local charged = redis.call('HGET', KEYS[2], ARGV[1])
local sub_bytes, sub_files
if charged then
  redis.call('HDEL', KEYS[2], ARGV[1])
  local space = string.find(charged, ' ')
  sub_bytes = tonumber(string.sub(charged, 1, space - 1))
  sub_files = tonumber(string.sub(charged, space + 1))
elseif redis.call('HEXISTS', KEYS[1], 'ledger') == 1 then
  return 0
else
  sub_bytes, sub_files = tonumber(ARGV[2]), tonumber(ARGV[3])
end
local bytes = math.max(0, tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0') - sub_bytes)
local files = math.max(0, tonumber(redis.call('HGET', KEYS[1], 'files') or '0') - sub_files)
redis.call('HSET', KEYS[1], 'bytes', bytes, 'files', files)
if bytes == 0 and files == 0 then redis.call('HSET', KEYS[1], 'ledger', '1') end
return 1
"""


def file_charge(session_id: str, file_id: str) -> str:
    """The ledger key of a stored file."""
    return f"file:{session_id}/{file_id}"


def blob_charge(runtime_id: str, sha256: str) -> str:
    """The ledger key of a runtime session's checkpoint blob."""
    return f"blob:{runtime_id}/{sha256}"


def state_charge(session_id: str) -> str:
    """The ledger key of a session's Python state (one blob, replaced by each run)."""
    return f"state:{session_id}"


class QuotaExceeded(PayloadTooLarge):
    """The tenant's storage quota would be exceeded (413)."""

    code = "quota_exceeded"


class TenantQuotas:
    """Checks and counts what each tenant stores."""

    def __init__(self, client: valkey.Valkey, settings: TenantSettings) -> None:
        self._client = client
        self._settings = settings
        self._charge = client.register_script(_CHARGE)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _keys(tenant: str) -> list[str]:
        return [f"k8si:quota:usage:{tenant}", f"k8si:quota:ledger:{tenant}"]

    async def _run(self, script: object, keys: list[str], args: list[object]) -> int:
        try:
            return int(await script(keys=keys, args=args))  # type: ignore[operator]
        except ValkeyError as exc:
            raise ServiceUnavailable("quota store unavailable", retry_after=2) from exc

    async def reserve(self, tenant: str, charge: str, size: int, files: int = 1) -> bool:
        """Count an object about to be stored (``charge``: its ledger key), or raise
        ``QuotaExceeded``. True when this call counted it, False when it already was."""
        return await self._count(tenant, charge, size, files, "new") == 1

    async def resize(self, tenant: str, charge: str, size: int, files: int = 0) -> None:
        """Make an object's charge ``size`` (new or replaced: a session's state after each
        run), or raise ``QuotaExceeded`` when it grows past the limit (the old one stands)."""
        await self._count(tenant, charge, size, files, "resize")

    async def _count(self, tenant: str, charge: str, size: int, files: int, mode: str) -> int:
        limits = self._settings.limits(tenant)
        outcome = await self._run(self._charge, self._keys(tenant), [
            charge, size, files, limits.storage_bytes, limits.files, mode])
        if outcome == 0:
            raise QuotaExceeded(f"tenant {tenant!r} storage quota reached "
                                f"({limits.storage_bytes} bytes, {limits.files} files)")
        return outcome

    async def release(self, tenant: str, charge: str, size: int, files: int = 1) -> bool:
        """Give back what a deleted or expired object counted, once: True if this call
        gave it back. ``size``/``files`` only serve an object counted before the ledger."""
        return bool(await self._run(self._release, self._keys(tenant), [charge, size, files]))

    async def usage(self, tenant: str) -> tuple[int, int]:
        data = await self._client.hgetall(f"k8si:quota:usage:{tenant}")  # type: ignore[misc]
        return int(data.get(b"bytes", 0)), int(data.get(b"files", 0))
