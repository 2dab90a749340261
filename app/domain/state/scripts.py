"""The state store's Valkey scripts: each changes a session's state and its quota charge
in one step, so no save, read, delete or expiry can slip between the two.

The ledger's own operations come from ``app/tenants/quotas.py`` (``LEDGER_LUA``), so the
charge is counted exactly as every other stored object's. Keys of one session: its hot
copy, the idle set, the last-use hash, its tombstone, and the tenant's usage, ledger
and the charge's release marker.

The tombstone is set by a deletion or an expiry, with no end while the archive may
still be in the object store: a read neither returns nor puts back a tombstoned state,
and the expiry sweep deletes a tombstoned archive again until it is gone. Once it is
(``settle``), the tombstone stays ``TOMBSTONE_SECONDS`` more, for reads begun before.
"""

from __future__ import annotations

from ...tenants.quotas import LEDGER_LUA

__all__ = ["MARK_ARCHIVED", "RECLAIM", "REHYDRATE", "REMOVE", "RETIRE", "SAVE", "SETTLE",
           "TOMBSTONE_SECONDS"]

#: How long a tombstone stays once the archive is gone (reads begun before it went).
TOMBSTONE_SECONDS = 600

# KEYS: hot, idle, used, tombstone, usage, ledger. ARGV: hot TTL, member, now, charge,
# size, max bytes (0: none), then the record's fields and values. Returns 1 saved,
# 0 refused (the tenant's quota; the previous state stays as it was).
SAVE = LEDGER_LUA + """
if ledger_recharge(KEYS[5], KEYS[6], ARGV[4], ARGV[5], ARGV[6]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# KEYS: hot, idle, used, tombstone, usage, ledger, marker. ARGV: member, charge.
# The hot copy and its entries go, the tombstone is set (until the archive is gone),
# the charge is given back.
REMOVE = LEDGER_LUA + """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], '1')
return ledger_release(KEYS[5], KEYS[6], KEYS[7], ARGV[2], 0, 0)
"""

# KEYS: hot, idle, used, tombstone, usage, ledger. ARGV: hot TTL, member, now, charge,
# size, then the record's fields and values. An archived record back hot, unless a
# newer one arrived or the state was deleted or expired meanwhile; counted at its size
# if the ledger does not hold it (an archive from before charges, whatever the quota:
# reading is never refused); not marked archived, so it is archived again once idle.
# Returns 1 put back, 0 not.
REHYDRATE = LEDGER_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[6], ARGV[4]) == 0 then
  ledger_recharge(KEYS[5], KEYS[6], ARGV[4], ARGV[5], 0)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# KEYS: hot, tombstone. ARGV: the sha256 archived. Returns 1 marked, 2 deleted meanwhile
# (the archive just written must go too: the tombstone stays until it has), 0 changed
# or expired (the archive stays).
MARK_ARCHIVED = """
if redis.call('HGET', KEYS[1], 'sha256') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'archived', ARGV[1])
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PERSIST', KEYS[2])
  return 2
end
return 0
"""

# KEYS: tombstone. The archive is gone: the tombstone ends after TOMBSTONE_SECONDS.
SETTLE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], {TOMBSTONE_SECONDS}) end
return 1
"""

# KEYS: hot, used, tombstone, usage, ledger, marker. ARGV: member, cutoff, charge, now.
# An archive's expiry: with no hot copy and no use since the cutoff, its last use is
# dropped, the tombstone set (until the archive is gone) and the charge given back
# (1: delete the archive now). A tombstoned archive (a deletion whose archive delete
# failed) is to be deleted again (1). With no last use recorded (an archive from
# before they were, or a Valkey that lost them), its TTL starts now (0).
RETIRE = LEDGER_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
local used = redis.call('HGET', KEYS[2], ARGV[1])
if not used then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  return 0
end
if tonumber(used) >= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], '1')
ledger_release(KEYS[4], KEYS[5], KEYS[6], ARGV[3], 0, 0)
return 1
"""

# KEYS: hot, used, usage, ledger, marker. ARGV: member, cutoff, charge. A last use with
# no archive listed: when the state is not hot either (a hot copy that expired before
# it could be archived, or an entry left by a deletion) and unused since the cutoff,
# the entry goes and the charge, if any, is given back.
RECLAIM = LEDGER_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local used = redis.call('HGET', KEYS[2], ARGV[1])
if not used or tonumber(used) >= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return ledger_release(KEYS[3], KEYS[4], KEYS[5], ARGV[3], 0, 0)
"""
