"""The state service: Python session state for the routes and for executions.

Everything is keyed by (tenant, session): another tenant's session has no state
here. Every blob read from Valkey or the archive is checked against its signature
before it goes anywhere (a sandbox, a download); one that fails is discarded and
refused with 400 ``invalid_state``. Blobs are opaque: the service checks sizes and
the format header, signs, stores and hands out bytes, and never unpickles or
decompresses them.

A session's state counts toward its tenant's storage quota at its latest size, for as
long as it is kept, hot or archived (the store charges it as it saves it): a capture
that would take the tenant past its quota is not kept (the previous state stays, and
the result says why), an upload past it is a 413 ``quota_exceeded``, and a deleted
state gives its bytes back (the archive's expiry too: ``lifecycle.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ...auth import Principal
from ...errors import BadRequest, InvalidState, NotFound, ServiceUnavailable, StateTooLarge
from ...executor import ExecutorResult, StateCapture, StateIssue
from ...ids import is_valid_id
from ...periodic import run_periodically
from ...sessions import Session, SessionStore
from ...settings import StateSettings
from ...storage.state_archive import StateHeader, StateRecord
from ...tenants import QuotaExceeded
from .blob import StateSigner, check_format
from .schemas import StateInfo, StateOutcome, StateUploaded
from .store import StateStore

__all__ = ["StateService"]

logger = logging.getLogger(__name__)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _check_id(session_id: str) -> None:
    if not is_valid_id(session_id):
        raise BadRequest("session id must be 21 characters of [A-Za-z0-9_-]")


def _issue(error: str) -> StateIssue:
    return StateIssue(name="*", type="state", error=error)


class StateService:
    """Loads, checks, stores and deletes the Python state of sessions."""

    def __init__(self, settings: StateSettings, store: StateStore, signer: StateSigner,
                 sessions: SessionStore) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.sessions = sessions

    # -- reading, always checked ----------------------------------------------------

    async def _load(self, tenant: str, session_id: str) -> StateRecord | None:
        found = await self.store.get(tenant, session_id)
        if found is None:
            return None
        record, source = found
        header = record.header
        if not self.signer.verify(tenant, session_id, record.blob, header.sha256,
                                  header.signature):
            logger.warning("state failed its integrity check; discarded",
                           extra={"tenant": tenant, "session_id": session_id, "source": source})
            await self.store.delete(tenant, session_id)
            raise InvalidState("the session's stored state failed its integrity check and was "
                               "discarded; run again to start from an empty namespace")
        if source == "archive":  # hot again, unless deleted or expired since it was read
            await self.store.rehydrate(record)
        return record

    async def exists(self, tenant: str, session_id: str) -> bool:
        return await self.store.header(tenant, session_id) is not None

    # -- routes -----------------------------------------------------------------------

    async def download(self, principal: Principal, session_id: str) -> StateRecord:
        _check_id(session_id)
        record = await self._load(principal.tenant, session_id)
        if record is None:
            raise NotFound("no state for this session")
        return record

    async def etag(self, principal: Principal, session_id: str) -> str | None:
        """The stored blob's hash (for ``If-None-Match``), without fetching the blob."""
        _check_id(session_id)
        found = await self.store.header(principal.tenant, session_id)
        return found[0].sha256 if found is not None else None

    async def info(self, principal: Principal, session_id: str) -> StateInfo:
        _check_id(session_id)
        found = await self.store.header(principal.tenant, session_id)
        if found is None:
            return StateInfo(exists=False, session_id=session_id)
        header, source, expires_at = found
        return StateInfo(exists=True, session_id=session_id, size_bytes=header.size,
                         hash=header.sha256, created_at=_iso(header.created_at),
                         expires_at=_iso(expires_at), source=source, origin=header.origin)

    async def upload(self, principal: Principal, session_id: str,
                     chunks: AsyncIterator[bytes]) -> StateUploaded:
        """Store a blob for the caller's session, signed for it (413 while streaming)."""
        _check_id(session_id)
        if not self.settings.enabled:
            raise BadRequest("Python state is disabled on this server")
        tenant = principal.tenant
        if await self.sessions.get(tenant, session_id) is None:
            if not await self.exists(tenant, session_id):
                raise NotFound("unknown session")
            await self.sessions.adopt(tenant, session_id)
        received = bytearray()
        async for chunk in chunks:
            received += chunk
            if len(received) > self.settings.max_bytes:
                raise StateTooLarge(f"the state is larger than MAX_STATE_SIZE "
                                    f"({self.settings.max_bytes} bytes)")
        blob = bytes(received)
        check_format(blob, self.settings.max_bytes, self.settings.max_raw_bytes)
        record = self._sign(tenant, session_id, blob, "upload")
        await self.store.save(record)  # QuotaExceeded: 413, the stored state as it was
        return StateUploaded(message="state_uploaded", session_id=session_id, size=len(blob),
                             hash=record.header.sha256)

    async def delete(self, principal: Principal, session_id: str) -> None:
        _check_id(session_id)
        await self.store.delete(principal.tenant, session_id)

    def _sign(self, tenant: str, session_id: str, blob: bytes, origin: str) -> StateRecord:
        sha256, signature = self.signer.sign(tenant, session_id, blob)
        header = StateHeader(tenant=tenant, session_id=session_id, size=len(blob),
                             sha256=sha256, signature=signature, created_at=time.time(),
                             origin=origin)
        return StateRecord(header=header, blob=blob)

    # -- executions -----------------------------------------------------------------

    def capture(self) -> StateCapture | None:
        """What to ask of a Python execution's executor (None: state is off)."""
        return StateCapture.configured(self.settings)

    async def for_execution(self, tenant: str, session: Session) -> StateRecord | None:
        """The checked blob to restore in the session's next sandbox, if any."""
        if not self.settings.enabled or session.is_new:
            return None
        record = await self._load(tenant, session.id)
        if record is not None:
            await self.store.touch(tenant, session.id)
        return record

    async def after_execution(self, tenant: str, session_id: str, result: ExecutorResult,
                              previous: StateRecord | None) -> StateOutcome:
        """Store what the capture produced; a failure to store is reported, not raised."""
        errors = list(result.state_errors)
        status, blob = result.state_status, result.state
        if status == "captured" and blob is not None:
            try:
                check_format(blob, self.settings.max_bytes, self.settings.max_raw_bytes)
            except (StateTooLarge, InvalidState) as exc:
                errors.append(_issue(f"the captured state was refused: {exc.message}"))
                status = "empty"
        try:
            if status == "captured" and blob is not None:
                record = self._sign(tenant, session_id, blob, "execution")
                try:
                    await self.store.save(record)
                    return StateOutcome(True, record.header.size, tuple(errors))
                except QuotaExceeded as exc:  # the previous state stays
                    errors.append(_issue(f"the state was not kept: {exc.message}"))
            elif status == "empty":
                if previous is not None:  # none was there before this run: nothing to remove
                    await self.store.delete(tenant, session_id)
                return StateOutcome(False, 0, tuple(errors))
        except ServiceUnavailable as exc:
            logger.warning("state not stored", extra={"tenant": tenant, "session_id": session_id,
                                                      "error": str(exc)})
            errors.append(_issue(f"the state could not be stored: {exc.message}"))
        size = previous.header.size if previous is not None else 0
        return StateOutcome(previous is not None, size, tuple(errors))

    # -- archive --------------------------------------------------------------------

    async def run_archiver(self) -> None:
        """Archive idle hot copies forever (until cancelled); before the hot TTL ends."""
        idle = min(self.settings.archive_after, max(1, self.settings.hot_ttl // 2))
        interval = min(60.0, max(0.5, idle / 4))

        async def sweep() -> None:
            archived = await self.store.archive_idle(idle)
            if archived:
                logger.info("state archived", extra={"count": archived})

        await run_periodically(sweep, interval, what="state archive sweep", logger=logger)
