"""What a programmatic run keeps in Valkey between its steps, for any replica to read.

- ``k8si:ptc:run:<run>``: the run's record (tenant, session, language, tools, timeout,
  the inputs staged at its start), until the run ends or its lease does;
- ``k8si:ptc:nonce:<nonce>``: a continuation token was used (``SET NX``: exactly one
  request wins it, on any replica);
- ``k8si:ptc:req:<tenant>:<request id>``: the run a client request id belongs to,
  where its executor is, and the token nonce while it is paused (for cancel);
- ``k8si:ptc:cancelled:<run>``: the run was cancelled; a continuation is refused.

Valkey down is a 503, as everywhere else.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ...errors import ServiceUnavailable
from ...runtime_sessions import RuntimeRef
from ...storage import FileMeta
from ..files.service import InputFile

__all__ = ["RequestRecord", "RunRecord", "RunStore"]


@attrs.frozen
class RunRecord:
    """A run's facts that its later steps need."""

    run_id: str
    tenant: str
    session_id: str
    lang: str
    user_id: str | None
    tools: tuple[str, ...]
    timeout: float
    inputs: tuple[InputFile, ...]
    #: ``X-LibreChat-Code-Workspace-ID`` and ``workspace_instance_id`` (recorded only:
    #: nothing is kept per workspace yet).
    workspace_id: str | None = None
    workspace_instance_id: str | None = None
    #: The runtime session the run goes on in (the ``stateful`` profile with a hint).
    runtime: RuntimeRef | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({
            "run_id": self.run_id, "tenant": self.tenant, "session_id": self.session_id,
            "lang": self.lang, "user_id": self.user_id, "tools": list(self.tools),
            "timeout": self.timeout, "workspace_id": self.workspace_id,
            "workspace_instance_id": self.workspace_instance_id,
            "runtime": self.runtime.to_json() if self.runtime is not None else None,
            "inputs": [[item.path, orjson.loads(item.meta.to_json())] for item in self.inputs]})

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        raw: dict[str, Any] = orjson.loads(data)
        inputs = tuple(InputFile(path, FileMeta.from_json(orjson.dumps(meta)))
                       for path, meta in raw.pop("inputs"))
        runtime = raw.pop("runtime", None)
        return cls(**{**raw, "tools": tuple(raw["tools"]), "inputs": inputs,
                      "runtime": RuntimeRef.from_json(runtime) if runtime else None})


@attrs.frozen
class RequestRecord:
    """The run behind a client's request id, for ``/exec/programmatic/cancel``."""

    run_id: str
    session_id: str
    executor_address: str
    #: While paused: where the sandbox is held, and the nonce its token will use.
    location: str | None = None
    nonce: str | None = None


# KEYS: the tenant's paused runs (sorted set, scored by lease end); ARGV: cap, lease
# seconds, the run. 1 when the run may pause (it is counted), 0 at the cap.
_PAUSE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local cap, seconds = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if cap > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], t + seconds, ARGV[3])
if redis.call('TTL', KEYS[1]) < seconds + 60 then redis.call('EXPIRE', KEYS[1], seconds + 60) end
return 1
"""


class RunStore:
    """Run records, used nonces, request ids and cancellations in Valkey."""

    def __init__(self, client: valkey.Valkey) -> None:
        self._client = client
        self._pause = client.register_script(_PAUSE)

    async def pause(self, tenant: str, run_id: str, cap: int, seconds: int) -> bool:
        """Count the run among the tenant's paused runs; False when it has ``cap``."""
        try:
            return bool(int(await self._pause(keys=[f"k8si:ptc:paused:{tenant}"],
                                              args=[cap, seconds, run_id])))
        except ValkeyError as exc:
            raise ServiceUnavailable("the session store is unavailable",
                                     retry_after=2) from exc

    async def unpause(self, tenant: str, run_id: str) -> None:
        await self._do("zrem", f"k8si:ptc:paused:{tenant}", run_id)

    async def forget_request(self, tenant: str, request_id: str) -> None:
        await self._do("delete", f"k8si:ptc:req:{tenant}:{request_id}")

    async def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except ValkeyError as exc:
            raise ServiceUnavailable("the session store is unavailable", retry_after=2) from exc

    async def save_run(self, record: RunRecord, ttl: int) -> None:
        await self._do("set", f"k8si:ptc:run:{record.run_id}", record.to_json(), ex=ttl)

    async def load_run(self, run_id: str) -> RunRecord | None:
        data = await self._do("get", f"k8si:ptc:run:{run_id}")
        return RunRecord.from_json(data) if data is not None else None

    async def end_run(self, run_id: str) -> None:
        await self._do("delete", f"k8si:ptc:run:{run_id}")

    async def use_nonce(self, nonce: str, ttl: int) -> bool:
        """True for the one request that uses this token; False for every later one."""
        return bool(await self._do("set", f"k8si:ptc:nonce:{nonce}", b"1", nx=True, ex=ttl))

    async def remember_request(self, tenant: str, request_id: str, record: RequestRecord,
                               ttl: int) -> None:
        await self._do("set", f"k8si:ptc:req:{tenant}:{request_id}",
                       orjson.dumps(attrs.asdict(record)), ex=ttl)

    async def request(self, tenant: str, request_id: str) -> RequestRecord | None:
        data = await self._do("get", f"k8si:ptc:req:{tenant}:{request_id}")
        return RequestRecord(**orjson.loads(data)) if data is not None else None

    async def cancel_request(self, tenant: str, request_id: str, ttl: int) -> None:
        """Remember that the client cancelled ``request_id``, whether or not a run is known
        by it yet (a cancel may overtake the request it cancels)."""
        await self._do("set", f"k8si:ptc:cancelled-request:{tenant}:{request_id}", b"1", ex=ttl)

    async def forget_cancelled_request(self, tenant: str, request_id: str) -> None:
        await self._do("delete", f"k8si:ptc:cancelled-request:{tenant}:{request_id}")

    async def request_cancelled(self, tenant: str, request_id: str) -> bool:
        return bool(await self._do("exists",
                                   f"k8si:ptc:cancelled-request:{tenant}:{request_id}"))

    async def cancel(self, run_id: str, ttl: int) -> None:
        await self._do("set", f"k8si:ptc:cancelled:{run_id}", b"1", ex=ttl)

    async def cancelled(self, run_id: str) -> bool:
        return bool(await self._do("exists", f"k8si:ptc:cancelled:{run_id}"))
