"""Runtime sessions: one kept sandbox per (tenant, ``runtime_session_hint``).

``RuntimeSessions.begin`` takes the runtime session's lock, then gives the execution a
sandbox: the kept one (``reused``), else a fresh one filled from the last good
checkpoint (``restored``; ``reset`` when the checkpoint cannot be read), or, for a
hint never seen, a fresh one (``created``). The returned ``RuntimeRun`` (``run.py``)
places the request's inputs (skipping those the workspace already holds), gives
``stage_out`` its baseline (so only what this execution created or changed is an
output), checkpoints the workspace after the run, and ``end`` keeps the sandbox (idle
TTL, maximum age) or, after a failure, destroys it so that the next call restores from the last good
checkpoint; then it applies the caps (the least recently used kept sandboxes beyond
them are released: they were checkpointed after their last run, so nothing is lost,
and a busy one is skipped). The record is written and the lock released last.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

import attrs

from ..backends import SandboxBackend, lease_for_run
from ..backends.base import RuntimeKey, SandboxLease
from ..domain.files.service import InputFile
from ..errors import (
    ExecutorFailed,
    InvalidRuntimeSessionHint,
    RuntimeSessionsUnsupported,
)
from ..executor import ExecutorError
from ..ids import new_id
from ..sessions import Session, SessionStore
from ..settings import Settings
from .checkpoint import CheckpointLost, Checkpoints
from .records import RuntimeRecord, RuntimeRecords, owner_of, record_key
from .run import RuntimeRef, RuntimeRun

__all__ = ["HINT", "RuntimeSessions"]

logger = logging.getLogger(__name__)

#: What a ``runtime_session_hint`` may be (as LibreChat's reference server checks it).
HINT = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RuntimeSessions:
    """Runtime sessions of every tenant, on this deployment's backend."""

    def __init__(self, settings: Settings, backend: SandboxBackend, records: RuntimeRecords,
                 checkpoints: Checkpoints, sessions: SessionStore) -> None:
        self.settings = settings
        self.backend = backend
        self.records = records
        self.checkpoints = checkpoints
        self.sessions = sessions

    @staticmethod
    def check_hint(hint: str) -> str:
        if not isinstance(hint, str) or not HINT.fullmatch(hint):
            raise InvalidRuntimeSessionHint(
                "runtime_session_hint must be 1-128 characters of [A-Za-z0-9._:-]")
        return hint

    async def begin(self, tenant: str, hint: str, language: str,
                    user_id: str | None = None) -> RuntimeRun:
        """The execution's sandbox, under the runtime session's lock (see the module).
        ``user_id``: the token's subject of a JWT caller, whose runtime sessions are its
        own (recorded under its ``owner_of``, part of the record's key)."""
        if not self.backend.keeps_sandboxes:
            raise RuntimeSessionsUnsupported(
                "The selected worker does not provide a stateful workspace")
        hint, owner = self.check_hint(hint), owner_of(user_id)
        key = record_key(tenant, hint, owner)
        token = await self.records.lock(key, self.settings.queue_timeout)
        try:
            return await self._claim(tenant, hint, owner, language, token)
        except BaseException:
            await self.records.unlock(key, token)
            raise

    async def _claim(self, tenant: str, hint: str, owner: str, language: str,
                     token: str) -> RuntimeRun:
        record = await self.records.get(tenant, hint, owner)
        now = time.time()
        if record is None:
            session = self.sessions.fresh(tenant)
            await self.sessions.record(session)
            record = RuntimeRecord(id=new_id(), tenant=tenant, hint=hint,
                                   session_id=session.id, created_at=now, last_used=now,
                                   owner=owner)
            await self.records.save(record)  # a programmatic run's later steps read it
            lease = await self._fresh(language, session.id, tenant)
            return RuntimeRun(self, record, token, lease, session, "created", {}, now)
        session = (await self.sessions.get(tenant, record.session_id)
                   or await self.sessions.adopt(tenant, record.session_id))
        key = RuntimeKey(tenant, record.id, record.session_id)
        if record.location and record.language == language:
            # Leased for the longest run it may serve, as a fresh claim is (``_fresh``):
            # else a reused sandbox's lease ran out before a long run did.
            reclaimed = await self.backend.reclaim(record.location, key, lease_seconds=(
                lease_for_run(self.settings.max_execution_time, self.settings.compile_timeout)))
            if reclaimed is not None:
                if record.executor_token:  # else the client's own (an older record)
                    reclaimed.executor.token = record.executor_token
                try:
                    manifest = await self.checkpoints.load(tenant, record.id, record.generation)
                except CheckpointLost:
                    manifest = {}  # the live workspace is whole; only the baseline is lost
                since = record.sandbox_since or now
                return RuntimeRun(self, record, token, reclaimed, session, "reused", manifest,
                                  since)
        elif record.location:  # another language: the workspace moves through its checkpoint
            await self.backend.drop(record.location)
        lease = await self._fresh(language, session.id, tenant)
        async with self._released_on_failure(lease):
            try:
                manifest = await self.checkpoints.load(tenant, record.id, record.generation)
                status = "restored"
            except CheckpointLost as exc:
                logger.warning("checkpoint lost: the runtime session starts afresh", extra={
                    "runtime_session_id": record.id, "tenant": tenant, "detail": str(exc)})
                manifest, status = {}, "reset"
                record = attrs.evolve(record, generation=0)
            manifest = await self.checkpoints.restore(lease.executor, tenant, record.id, manifest)
        return RuntimeRun(self, record, token, lease, session, status, manifest, now)

    async def resume(self, ref: RuntimeRef, lease: SandboxLease,
                     inputs: list[InputFile]) -> RuntimeRun | None:
        """A programmatic run's runtime session again, in a later step (its sandbox
        ``lease`` resumed, its lock still held by ``ref.token``); None when its record is
        gone."""
        record = await self.records.get_by_key(ref.key)
        if record is None:
            return None
        try:
            manifest = await self.checkpoints.load(record.tenant, record.id, record.generation)
        except CheckpointLost:
            manifest = {}
        session = Session(record.session_id, record.tenant, record.created_at)
        lease.executor.token = ref.executor_token or lease.executor.token
        return RuntimeRun(self, record, ref.token, lease, session, ref.status, manifest,
                          ref.sandbox_since, primed={item.path: item.meta for item in inputs})

    async def _fresh(self, language: str, session_id: str, tenant: str) -> SandboxLease:
        """A new sandbox, asked to stay for further executions before its first."""
        # The claim's ordinary lease (a replica that dies during the first execution
        # leaves it to the reaper soon); the maximum age is the hard end (a pod's
        # activeDeadlineSeconds), the idle lease is set once the sandbox is kept.
        lease = await self.backend.acquire(
            language, session_id, tenant,
            lease_seconds=lease_for_run(self.settings.max_execution_time,
                                        self.settings.compile_timeout),
            deadline_seconds=self.settings.runtime_sessions.max_age)
        async with self._released_on_failure(lease):
            await lease.executor.keep()
        return lease

    @contextlib.asynccontextmanager
    async def _released_on_failure(self, lease: SandboxLease) -> AsyncIterator[None]:
        """A sandbox being made ready is given back if that fails (a 503 for the client
        when its executor did)."""
        try:
            yield
        except ExecutorError as exc:
            await self.backend.release(lease)
            raise ExecutorFailed("the sandbox failed; try again", retry_after=1) from exc
        except BaseException:
            await self.backend.release(lease)
            raise

    async def enforce_caps(self, record: RuntimeRecord) -> None:
        """Release the least recently used kept sandboxes beyond the caps (never the one
        just kept, never one that is executing)."""
        limits = self.settings.runtime_sessions
        stale_before = time.time() - limits.idle_ttl
        for scope, cap in ((record.tenant, limits.per_tenant), (None, limits.total)):
            keys = await self.records.kept(scope, stale_before)
            excess = len(keys) - cap
            for key in keys:
                if excess <= 0:
                    break
                if key != record.key and await self.release(key, reason="cap"):
                    excess -= 1

    async def release(self, key: str, reason: str) -> bool:
        """Checkpointed already: drop the kept sandbox of the record at ``key``; False
        when its runtime session is executing (its lock is taken)."""
        token = await self.records.try_lock(key)
        if token is None:
            return False
        try:
            victim = await self.records.get_by_key(key)
            if victim is None:
                await self.records.forget(key)
                return True
            if victim.location:
                await self.backend.drop(victim.location)
            await self.records.save(attrs.evolve(victim, location=""))
            logger.info("kept sandbox released", extra={
                "runtime_session_id": victim.id, "tenant": victim.tenant, "reason": reason})
            return True
        finally:
            await self.records.unlock(key, token)

    async def end_session(self, record: RuntimeRecord) -> None:
        """End a runtime session: its sandbox, its checkpoints and its record."""
        if record.location:
            await self.backend.drop(record.location)
        await self.checkpoints.delete_all(record.tenant, record.id)
        await self.records.delete(record)
