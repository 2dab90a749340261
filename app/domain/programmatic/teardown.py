"""Ending a programmatic run: its sandbox freed and the run forgotten.

Freeing releases the sandbox to the backend; a runtime session's sandbox is dropped
instead and the runtime session's lock released (its next call restores the last
checkpoint). Forgetting removes the run's record, its place among the tenant's paused
runs and its client request id. A paused sandbox is found again by its location
(``resume``) for the few seconds its freeing takes.
"""

from __future__ import annotations

from ...backends import SandboxBackend, SandboxLease
from ...runtime_sessions import RuntimeSessions
from .store import RunRecord, RunStore
from .tokens import Continuation

__all__ = ["MARGIN", "RunTeardown"]

#: Seconds beyond a run's own limits: what the executor's step may take past its
#: timeout (the answer, state, files), and the hold on a paused sandbox being freed.
MARGIN = 60


class RunTeardown:
    """Frees runs' sandboxes and forgets the runs (the service's one way to end a run)."""

    def __init__(self, backend: SandboxBackend, runtime: RuntimeSessions | None,
                 runs: RunStore) -> None:
        self.backend = backend
        self.runtime = runtime
        self.runs = runs

    async def end(self, record: RunRecord, request_id: str | None = None) -> None:
        """The run is over: its record, its paused count and its request id go."""
        await self.runs.end_run(record.run_id)
        await self.runs.unpause(record.tenant, record.run_id)
        if request_id is not None:
            await self.runs.forget_request(record.tenant, request_id)

    async def free(self, record: RunRecord | None, lease: SandboxLease) -> None:
        """Release a run's sandbox; a runtime session's is dropped and its lock released
        (its next call restores the last checkpoint)."""
        runtime = record.runtime if record is not None else None
        run = (await self.runtime.resume(runtime, lease, list(record.inputs))
               if record is not None and runtime is not None
               and self.runtime is not None else None)
        if run is not None:
            await run.end(ok=False)
            return
        await self.backend.release(lease)
        if runtime is not None and self.runtime is not None:
            await self.runtime.records.unlock(runtime.key, runtime.token)

    async def abandon(self, record: RunRecord, lease: SandboxLease,
                      request_id: str | None = None) -> None:
        """Free the sandbox the run holds and forget the run."""
        await self.free(record, lease)
        await self.end(record, request_id)

    async def abandon_paused(self, record: RunRecord, location: str,
                             request_id: str | None = None) -> None:
        """Free the sandbox of a paused run (if it is still there) and forget the run."""
        lease = await self.backend.resume(location, record.session_id, record.tenant,
                                          MARGIN)
        if lease is not None:
            await self.free(record, lease)
        await self.end(record, request_id)

    async def destroy_paused(self, token: Continuation, record: RunRecord | None = None,
                             ) -> None:
        """Free the sandbox of a paused run whose token a request used (and refused)."""
        lease = await self.backend.resume(token.location, token.session_id, token.tenant,
                                          MARGIN)
        if lease is not None:
            await self.free(record, lease)
        if record is not None:
            await self.end(record)
        else:
            await self.runs.end_run(token.run_id)
            await self.runs.unpause(token.tenant, token.run_id)
