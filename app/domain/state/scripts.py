"""The state store's Valkey scripts: each changes a session's state and its quota charge
in one step, so no save, read, delete or expiry can slip between the two.

The ledger's own operations come from ``app/tenants/quotas.py`` (``LEDGER_LUA``), so the
charge is counted exactly as every other stored object's. Keys of one session: its hot
copy, the idle set, the last-use hash, its tombstone, and the tenant's usage, ledger
and the charge's release marker.

Hot copies are also counted, in bytes, for ``STATE_HOT_MAX_BYTES`` (``HOT_LUA``): a
sorted set of them by when they expire, their sizes, and the total. Saves and reads
back add to it, deletions and shedding take from it, and ``PRUNE`` drops the hot copies
that expired on their own.

The tombstone is set by a deletion or an expiry, with no end while the archive may
still be in the object store: a read neither returns nor puts back a tombstoned state,
and the expiry sweep deletes a tombstoned archive again until it is gone. Once it is
(``settle``), the tombstone stays ``TOMBSTONE_SECONDS`` more, for reads begun before.
"""

from __future__ import annotations

from ...tenants.quotas import LEDGER_LUA

__all__ = ["HOT_KEYS", "MARK_ARCHIVED", "PRUNE", "RECLAIM", "REHYDRATE", "REMOVE", "RETIRE",
           "SAVE", "SETTLE", "SHED", "TOMBSTONE_SECONDS"]

#: How long a tombstone stays once the archive is gone (reads begun before it went).
TOMBSTONE_SECONDS = 600

#: The hot copies' accounting: by expiry (sorted set), their sizes (hash), the total.
HOT_KEYS = ("k8si:state:hot", "k8si:state:hotsize", "k8si:state:hotbytes")

HOT_LUA = """
local function hot_track(hot, sizes, total, member, size, expires)
  local before = tonumber(redis.call('HGET', sizes, member) or '0')
  redis.call('HSET', sizes, member, size)
  redis.call('ZADD', hot, expires, member)
  return redis.call('INCRBY', total, tonumber(size) - before)
end
local function hot_untrack(hot, sizes, total, member)
  local before = redis.call('HGET', sizes, member)
  redis.call('ZREM', hot, member)
  if before then
    redis.call('HDEL', sizes, member)
    redis.call('DECRBY', total, tonumber(before))
  end
end
"""

# KEYS: hot, idle, used, tombstone, usage, ledger, then HOT_KEYS. ARGV: hot TTL, member,
# now, charge, size, max bytes (0: none), hot budget (0: none), then the record's fields
# and values. Returns 1 saved, 2 saved past the hot budget (to be archived and shed
# now), 0 refused (the tenant's quota; the previous state stays as it was).
SAVE = LEDGER_LUA + HOT_LUA + """
if ledger_recharge(KEYS[5], KEYS[6], ARGV[4], ARGV[5], ARGV[6]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
local total = hot_track(KEYS[7], KEYS[8], KEYS[9], ARGV[2], ARGV[5],
                        tonumber(ARGV[3]) + tonumber(ARGV[1]))
if tonumber(ARGV[7]) > 0 and total > tonumber(ARGV[7]) then return 2 end
return 1
"""

# KEYS: hot, idle, used, tombstone, usage, ledger, marker, then HOT_KEYS. ARGV: member,
# charge. The hot copy and its entries go, the tombstone is set (until the archive is
# gone), the charge is given back.
REMOVE = LEDGER_LUA + HOT_LUA + """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], '1')
hot_untrack(KEYS[8], KEYS[9], KEYS[10], ARGV[1])
return ledger_release(KEYS[5], KEYS[6], KEYS[7], ARGV[2], 0, 0)
"""

# KEYS: hot, idle, used, tombstone, usage, ledger, then HOT_KEYS. ARGV: hot TTL, member,
# now, charge, size, then the record's fields and values. An archived record back hot, unless a
# newer one arrived or the state was deleted or expired meanwhile; counted at its size
# if the ledger does not hold it (an archive from before charges, whatever the quota:
# reading is never refused); not marked archived, so it is archived again once idle.
# Returns 1 put back, 0 not.
REHYDRATE = LEDGER_LUA + HOT_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[6], ARGV[4]) == 0 then
  ledger_recharge(KEYS[5], KEYS[6], ARGV[4], ARGV[5], 0)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
hot_track(KEYS[7], KEYS[8], KEYS[9], ARGV[2], ARGV[5], tonumber(ARGV[3]) + tonumber(ARGV[1]))
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

# KEYS: hot copy, then HOT_KEYS. ARGV: member. A hot copy whose blob is archived goes
# (a read finds it in the archive) and is no longer counted; one gone already is no
# longer counted. Returns its size when it went, -1 when it is not archived (kept).
SHED = HOT_LUA + """
local archived, sha = unpack(redis.call('HMGET', KEYS[1], 'archived', 'sha256'))
if sha and archived ~= sha then return -1 end
local size = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('DEL', KEYS[1])
hot_untrack(KEYS[2], KEYS[3], KEYS[4], ARGV[1])
return size
"""

# KEYS: hot copy, then HOT_KEYS. ARGV: member, now. A hot copy counted past its expiry:
# no longer counted if it is gone, else counted until its expiry now (1 dropped, 0 kept).
PRUNE = HOT_LUA + """
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  hot_untrack(KEYS[2], KEYS[3], KEYS[4], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + ttl, ARGV[1])
return 0
"""
