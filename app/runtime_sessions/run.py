"""One execution in a runtime session (``RuntimeRun``), from its claim to ``end``.

It places the request's inputs (skipping those the workspace already holds), gives
``stage_out`` its baseline, checkpoints the workspace after the run, and ``end`` keeps
the sandbox or destroys it, writes the record and releases the lock. ``RuntimeRef`` is
what a paused programmatic run keeps of it between its steps. Made by
``RuntimeSessions`` (``service.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..backends.base import RuntimeKey, SandboxLease
from ..domain.files.service import InputFile, OpenFile
from ..errors import ServiceUnavailable
from ..executor import ExecutorError
from ..sessions import Session
from ..storage import FileMeta, StorageUnavailable
from ..tenants import QuotaExceeded
from .checkpoint import Entry, Manifest
from .records import RuntimeRecord

if TYPE_CHECKING:
    from .service import RuntimeSessions

__all__ = ["RuntimeRef", "RuntimeRun"]

logger = logging.getLogger(__name__)

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
