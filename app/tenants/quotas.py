"""Per-tenant storage quotas, atomic across replicas (one Valkey script per change).

Stored bytes and file count: reserved before a file is stored, given back when it is
deleted or expires. Each charge is kept in a ledger under the stored object's own key
(``file_charge``, ``blob_charge``, ``state_charge``), so counting is idempotent: a
session's Python state, rewritten in place, is charged at its latest size
(``recharge``); reserving an object
already counted adds nothing, and giving one back twice (two concurrent DELETEs of
one file, a sweep and a DELETE, two sweeps) gives it back once. While a tenant still
has usage counted before the ledger existed, an object not in it is given back by the
size the caller names, never below zero, and every release leaves a marker for a day
that makes a second one a no-op; once the tenant's usage is zero, only the ledger
counts. Usage that drifted before the ledger, by the double releases it prevents, is
not corrected. (The tenant's execution quotas, per window and concurrent, are checked
with every other per-request limit in ``admission.py``.)
"""

from __future__ import annotations

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import PayloadTooLarge, ServiceUnavailable
from ..settings import TenantSettings

__all__ = ["LEDGER_LUA", "QuotaExceeded", "TenantQuotas", "blob_charge", "file_charge",
           "state_charge"]

# KEYS: 1 the tenant's usage (hash: bytes, files, ledger), 2 its ledger (hash: object
#       key -> "bytes files"). ARGV: 1 object key, 2 bytes, 3 files, 4 max bytes,
#       5 max files (0: no limit). Returns 1 newly counted, 2 already counted, 0 refused.
_RESERVE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 2 end
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local add_bytes, add_files = tonumber(ARGV[2]), tonumber(ARGV[3])
local max_bytes, max_files = tonumber(ARGV[4]), tonumber(ARGV[5])
if add_bytes > 0 and max_bytes > 0 and bytes + add_bytes > max_bytes then return 0 end
if add_files > 0 and max_files > 0 and files + add_files > max_files then return 0 end
if bytes == 0 and files == 0 then redis.call('HSET', KEYS[1], 'ledger', '1') end
redis.call('HINCRBY', KEYS[1], 'bytes', add_bytes)
redis.call('HINCRBY', KEYS[1], 'files', add_files)
redis.call('HSET', KEYS[2], ARGV[1], add_bytes .. ' ' .. add_files)
return 1
"""

#: The ledger's own operations as Lua functions, for scripts that must change the
#: ledger in the same step as their own keys (``state_charge``: a session's Python
#: state, saved and deleted together with its charge, ``app/domain/state/store.py``).
#: ``usage``, ``ledger``: the tenant's keys (``TenantQuotas.ledger_keys``); ``marker``:
#: the object's release marker (used while the tenant has usage from before the ledger).
LEDGER_LUA = """
local function ledger_release(usage, ledger, marker, charge, size, count)
  local legacy = redis.call('HEXISTS', usage, 'ledger') == 0
  local charged = redis.call('HGET', ledger, charge)
  local sub_bytes, sub_files
  if charged then
    redis.call('HDEL', ledger, charge)
    local space = string.find(charged, ' ')
    sub_bytes = tonumber(string.sub(charged, 1, space - 1))
    sub_files = tonumber(string.sub(charged, space + 1))
  elseif not legacy or redis.call('EXISTS', marker) == 1 then
    return 0
  else
    sub_bytes, sub_files = tonumber(size), tonumber(count)
  end
  local bytes = math.max(0, tonumber(redis.call('HGET', usage, 'bytes') or '0') - sub_bytes)
  local files = math.max(0, tonumber(redis.call('HGET', usage, 'files') or '0') - sub_files)
  redis.call('HSET', usage, 'bytes', bytes, 'files', files)
  if legacy then redis.call('SET', marker, '1', 'EX', 86400) end
  if bytes == 0 and files == 0 then redis.call('HSET', usage, 'ledger', '1') end
  return 1
end
local function ledger_recharge(usage, ledger, charge, size, max_bytes)
  size, max_bytes = tonumber(size), tonumber(max_bytes)
  local before = 0
  local charged = redis.call('HGET', ledger, charge)
  if charged then before = tonumber(string.sub(charged, 1, string.find(charged, ' ') - 1)) end
  local bytes = tonumber(redis.call('HGET', usage, 'bytes') or '0')
  local files = tonumber(redis.call('HGET', usage, 'files') or '0')
  if size > before and max_bytes > 0 and bytes + size - before > max_bytes then return 0 end
  if bytes == 0 and files == 0 then redis.call('HSET', usage, 'ledger', '1') end
  redis.call('HINCRBY', usage, 'bytes', size - before)
  redis.call('HSET', ledger, charge, size .. ' 0')
  return 1
end
"""

# KEYS as for _RESERVE, and 3 the object's release marker. ARGV: 1 object key, 2 bytes,
# 3 files (what it counted if it is not in the ledger). Returns 1 given back, 0 nothing
# to give back.
_RELEASE = LEDGER_LUA + """
return ledger_release(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
"""

# KEYS as for _RESERVE. ARGV: 1 object key, 2 its size now, 3 max bytes (0: no limit).
# The object's charge becomes its size now, whatever it counted before (an object that
# is rewritten in place). Returns 1 counted, 0 refused (it grew past the limit; what it
# counted before stays).
_RECHARGE = LEDGER_LUA + """
return ledger_recharge(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
"""


def file_charge(session_id: str, file_id: str) -> str:
    """The ledger key of a stored file."""
    return f"file:{session_id}/{file_id}"


def blob_charge(runtime_id: str, sha256: str) -> str:
    """The ledger key of a runtime session's checkpoint blob."""
    return f"blob:{runtime_id}/{sha256}"


def state_charge(session_id: str) -> str:
    """The ledger key of a session's Python state (its hot copy and archive, one object
    rewritten in place: charged at its latest size, ``TenantQuotas.recharge``)."""
    return f"state:{session_id}"


class QuotaExceeded(PayloadTooLarge):
    """The tenant's storage quota would be exceeded (413)."""

    code = "quota_exceeded"


class TenantQuotas:
    """Checks and counts what each tenant stores."""

    def __init__(self, client: valkey.Valkey, settings: TenantSettings) -> None:
        self._client = client
        self._settings = settings
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._recharge = client.register_script(_RECHARGE)

    @staticmethod
    def ledger_keys(tenant: str) -> list[str]:
        """The tenant's usage and ledger keys (``LEDGER_LUA``'s ``usage``, ``ledger``)."""
        return [f"k8si:quota:usage:{tenant}", f"k8si:quota:ledger:{tenant}"]

    @staticmethod
    def marker_key(tenant: str, charge: str) -> str:
        """The object's release marker (``LEDGER_LUA``'s ``marker``)."""
        return f"k8si:quota:released:{tenant}:{charge}"

    def max_bytes(self, tenant: str) -> int:
        """The tenant's storage quota in bytes (0: none)."""
        return self._settings.limits(tenant).storage_bytes

    async def _run(self, script: object, keys: list[str], args: list[object]) -> int:
        try:
            return int(await script(keys=keys, args=args))  # type: ignore[operator]
        except ValkeyError as exc:
            raise ServiceUnavailable("quota store unavailable", retry_after=2) from exc

    async def reserve(self, tenant: str, charge: str, size: int, files: int = 1) -> bool:
        """Count an object about to be stored (``charge``: its ledger key), or raise
        ``QuotaExceeded``. True when this call counted it, False when it already was."""
        limits = self._settings.limits(tenant)
        outcome = await self._run(self._reserve, self.ledger_keys(tenant),
                                  [charge, size, files, limits.storage_bytes, limits.files])
        if outcome == 0:
            raise QuotaExceeded(f"tenant {tenant!r} storage quota reached "
                                f"({limits.storage_bytes} bytes, {limits.files} files)")
        return outcome == 1

    async def recharge(self, tenant: str, charge: str, size: int, *,
                       enforce: bool = True) -> None:
        """Count an object rewritten in place at its size now (``charge``: its ledger key),
        or raise ``QuotaExceeded`` when it grew past the limit (what it counted before
        stays). ``enforce=False`` counts it whatever the limit (state read back from the
        archive: reading is never refused)."""
        limits = self._settings.limits(tenant)
        outcome = await self._run(self._recharge, self.ledger_keys(tenant),
                                  [charge, size, limits.storage_bytes if enforce else 0])
        if outcome == 0:
            raise QuotaExceeded(f"tenant {tenant!r} storage quota reached "
                                f"({limits.storage_bytes} bytes)")

    async def release(self, tenant: str, charge: str, size: int, files: int = 1) -> bool:
        """Give back what a deleted or expired object counted, once: True if this call
        gave it back. ``size``/``files`` only serve an object counted before the ledger."""
        keys = [*self.ledger_keys(tenant), self.marker_key(tenant, charge)]
        return bool(await self._run(self._release, keys, [charge, size, files]))

    async def usage(self, tenant: str) -> tuple[int, int]:
        data = await self._client.hgetall(f"k8si:quota:usage:{tenant}")  # type: ignore[misc]
        return int(data.get(b"bytes", 0)), int(data.get(b"files", 0))
