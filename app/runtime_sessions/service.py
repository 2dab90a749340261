"""Runtime sessions: one kept sandbox per (tenant, ``runtime_session_hint``).

``RuntimeSessions.begin`` takes the runtime session's lock, then gives the execution a
sandbox: the kept one (``reused``), else a fresh one filled from the last good
checkpoint (``restored``; ``reset`` when the checkpoint cannot be read), or, for a
hint never seen, a fresh one (``created``). The returned ``RuntimeRun`` places the
request's inputs (skipping those the workspace already holds), gives ``stage_out`` its
baseline (so only what this execution created or changed is an output), checkpoints
the workspace after the run, and ``end`` keeps the sandbox (idle TTL, maximum age)
or, after a failure, destroys it so that the next call restores from the last good
checkpoint; then it applies the caps (the least recently used kept sandboxes beyond
them are released: they were checkpointed after their last run, so nothing is lost,
and a busy one is skipped). The record is written and the lock released last.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

from ..backends import SandboxBackend, lease_for_run
from ..backends.base import RuntimeKey, SandboxLease
from ..domain.files.service import InputFile, OpenFile
from ..errors import (
    ExecutorFailed,
    InvalidRuntimeSessionHint,
    RuntimeSessionsUnsupported,
    ServiceUnavailable,
)
from ..executor import ExecutorError
from ..ids import new_id
from ..sessions import Session, SessionStore
from ..settings import Settings
from ..storage import FileMeta, StorageUnavailable
from ..tenants import QuotaExceeded
from .checkpoint import CheckpointLost, Checkpoints, Entry, Manifest
from .records import RuntimeRecord, RuntimeRecords, owner_of, record_key

__all__ = ["HINT", "RuntimeRef", "RuntimeRun", "RuntimeSessions"]

logger = logging.getLogger(__name__)

#: What a ``runtime_session_hint`` may be (as LibreChat's reference server checks it).
HINT = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The most files the executor lists: a longer listing cannot be checkpointed whole.
_LISTING_CAP = 1000


def _file_source(meta: FileMeta) -> dict[str, Any]:
    return {"file": {"session_id": meta.session_id, "id": meta.id}}


@attrs.frozen
class RuntimeRef:
    """What the later steps of a programmatic run need to go on in its runtime session
    (kept with the run's record in Valkey; the lock's token is the run's)."""

    key: str
    token: str
    runtime_session_id: str
    status: str
    sandbox_since: float
    #: What the kept sandbox's executor asks of each execution (``ExecutorClient.keep``):
    #: a later step's sandbox, resumed elsewhere, is kept again with it.
    executor_token: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuntimeRef:
        # A run paused by an older release has no executor token: its default.
        return cls(**{a.name: data[a.name] for a in attrs.fields(cls) if a.name in data})


@attrs.define
class RuntimeRun:
    """One execution in a runtime session, from its claim to ``end``."""

    service: RuntimeSessions
    record: RuntimeRecord
    token: str
    lease: SandboxLease
    session: Session
    #: ``created``, ``reused``, ``restored`` or ``reset``.
    status: str
    #: What the workspace held before this execution (the last checkpoint, or restored).
    manifest: Manifest
    #: When this sandbox was first claimed (its maximum age runs from there).
    sandbox_since: float
    primed: dict[str, FileMeta] = attrs.field(factory=dict)
    #: Inputs of this run whose stored bytes were found gone: not in the workspace.
    gone: set[str] = attrs.field(factory=set)
    generation: int = 0
    broken: bool = False
    ended: bool = False

    def __attrs_post_init__(self) -> None:
        self.generation = self.record.generation

    @property
    def key(self) -> RuntimeKey:
        return RuntimeKey(self.record.tenant, self.record.id, self.record.session_id)

    def ref(self) -> RuntimeRef:
        return RuntimeRef(self.record.key, self.token, self.record.id, self.status,
                          self.sandbox_since, self.lease.executor.token or "")

    def baseline(self) -> dict[str, tuple[str, int]]:
        """Path → (sha256, size) of what the workspace held before: not outputs."""
        return {path: (entry.sha256, entry.size) for path, entry in self.manifest.items()}

    async def stage_in(self, open_file: OpenFile, inputs: list[InputFile]) -> None:
        """Place the request's inputs, but not one the workspace already holds: the same
        bytes, or the same input placed before and changed in place by the code since
        (LibreChat sends a conversation's files with every call: its changes stay). A
        read-only input is always placed again (its original bytes). One whose stored
        bytes are gone is not placed, and a copy placed by an earlier run is removed
        (``FileService.open``): ``stage_out`` reports it deleted."""
        for item in inputs:
            entry = self.manifest.get(item.path)
            self.primed[item.path] = item.meta
            if entry is not None and not item.meta.read_only and (
                    entry.sha256 == item.meta.sha256 or entry.primed == item.meta.id):
                continue
            chunks = await open_file(item.meta)
            if chunks is None:  # its bytes are gone: the file no longer exists, here too
                del self.primed[item.path]
                self.gone.add(item.path)
                await self.lease.executor.delete_file(item.path)  # a copy placed before
                continue
            await self.lease.executor.put_file(item.path, item.meta.size, chunks)

    def _changed_in_place(self, item: InputFile) -> bool:
        entry = self.manifest.get(item.path)
        return (entry is not None and not item.meta.read_only
                and entry.primed == item.meta.id and entry.sha256 != item.meta.sha256)

    def output_inputs(self, inputs: list[InputFile]) -> list[InputFile]:
        """The inputs ``stage_out`` compares against: one not placed because the code
        changed it in place earlier is judged against the workspace's baseline instead."""
        return [item for item in inputs if not self._changed_in_place(item)]

    async def checkpoint(self, listing: list[dict[str, Any]] | None,
                         stored: list[FileMeta]) -> None:
        """Checkpoint the workspace as the run left it (quiescent: the executor swept the
        program's tree). A store failure is logged, never answered (the code ran): the
        previous checkpoint stays in force and the next one covers the difference."""
        if listing is None or len(listing) >= _LISTING_CAP:
            logger.warning("workspace not checkpointed: its listing is missing or capped",
                           extra={"runtime_session_id": self.record.id})
            return
        try:
            manifest = await self._manifest(listing, {m.name: m for m in stored})
            generation = self.generation + 1
            await self.service.checkpoints.save(self.record.tenant, self.record.id,
                                                generation, manifest)
        except (StorageUnavailable, QuotaExceeded) as exc:
            logger.warning("checkpoint failed; the previous one stays in force", extra={
                "runtime_session_id": self.record.id, "error": exc.code,
                "detail": str(exc)[:500]})
            return
        except ExecutorError as exc:
            logger.warning("checkpoint failed: the sandbox did not give its files back",
                           extra={"runtime_session_id": self.record.id,
                                  "detail": str(exc)[:500]})
            self.broken = True
            return
        previous, self.generation, self.manifest = self.manifest, generation, manifest
        try:
            await self.service.checkpoints.prune(self.record.tenant, self.record.id,
                                                 generation, [previous, manifest])
        except StorageUnavailable as exc:  # garbage left for the next prune
            logger.warning("old checkpoints not pruned", extra={
                "runtime_session_id": self.record.id, "detail": str(exc)[:500]})

    async def _manifest(self, listing: list[dict[str, Any]],
                        stored: Mapping[str, FileMeta]) -> Manifest:
        checkpoints, executor = self.service.checkpoints, self.lease.executor
        manifest: Manifest = {}
        read_only = {path: Entry(m.sha256, m.size, _file_source(m), read_only=True,
                                 primed=m.id)
                     for path, m in self.primed.items() if m.read_only}
        read_only.update({path: entry for path, entry in self.manifest.items()
                          if entry.read_only and path not in self.primed
                          and path not in self.gone})
        for item in listing:
            if item.get("skipped"):
                continue
            path, sha256, size = str(item["name"]), str(item["sha256"]), int(item["size"])
            if path in read_only:
                continue  # put back below: edits of read-only inputs are never kept
            previous, primed, output = (self.manifest.get(path), self.primed.get(path),
                                        stored.get(path))
            placed = primed.id if primed is not None else (
                previous.primed if previous is not None else "")
            if previous is not None and previous.sha256 == sha256:
                manifest[path] = attrs.evolve(previous, primed=placed)
            elif primed is not None and primed.sha256 == sha256:
                manifest[path] = Entry(sha256, size, _file_source(primed), primed=placed)
            elif output is not None and output.sha256 == sha256:
                manifest[path] = Entry(sha256, size, _file_source(output), primed=placed)
            elif sha256 and await checkpoints.put_blob(self.record.tenant, self.record.id,
                                                       sha256, executor, path=path, size=size):
                manifest[path] = Entry(sha256, size, {"blob": sha256}, primed=placed)
        listed = {str(item["name"]): str(item["sha256"]) for item in listing}
        for path, entry in read_only.items():
            if listed.get(path) != entry.sha256:  # changed or removed: the original again
                await checkpoints.restore(executor, self.record.tenant, self.record.id,
                                          {path: entry})
            manifest[path] = entry
        return manifest

    async def end(self, ok: bool) -> None:
        """Keep the sandbox (``ok``) or destroy it; write the record; release the lock;
        then apply the caps."""
        if self.ended:
            return
        self.ended = True
        service, now = self.service, time.time()
        record = attrs.evolve(self.record, last_used=now, generation=self.generation,
                              language=self.lease.language, location="", executor_token="")
        kept = False
        try:
            if ok and not self.broken:
                limits = service.settings.runtime_sessions
                try:
                    location = await service.backend.keep(
                        self.lease, self.key, limits.idle_ttl,
                        self.sandbox_since + limits.max_age)
                    record, kept = attrs.evolve(record, location=location, executor_token=(
                        self.lease.executor.token or "")), True
                except ServiceUnavailable as exc:  # the code ran: its checkpoint stands
                    logger.warning("kept sandbox lost while being kept", extra={
                        "runtime_session_id": record.id, "detail": str(exc)[:500]})
            if not kept:
                await service.backend.release(self.lease)
            record = attrs.evolve(record, sandbox_since=self.sandbox_since if kept else 0.0)
            await service.records.save(record)
        finally:
            await service.records.unlock(record.key, self.token)
        logger.info("runtime session execution ended", extra={
            "runtime_session_id": record.id, "tenant": record.tenant, "kept": kept,
            "runtime_status": self.status, "generation": record.generation})
        if kept:
            await service.enforce_caps(record)


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
