"""The execution service: validate, pick the session, claim a sandbox, run, answer.

It knows the backend only through the ``SandboxBackend`` seam and the executor
only through ``ExecutorClient``. Everything that is the request's fault raises a
typed error here; everything that is the program's fault is a 200 result.

``/exec`` and ``/exec/stream`` share this one path: with an ``OutputListener``,
``execute`` tells it when a sandbox is claimed (every request error has been
raised by then) and hands it the program's output as it arrives. Every finished
execution is recorded for operators (``recent``).

A ``stateful`` request with a ``runtime_session_hint`` runs in its runtime session
(``app/runtime_sessions``): the sandbox comes from ``RuntimeSessions.begin`` instead of
``acquire``, only the request's own ``files`` are placed (the workspace holds the
rest), outputs are what changed against the workspace's last checkpoint, and after the
run the workspace is checkpointed and the sandbox kept instead of released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from sidecar.contract import LANGUAGES, resolve_language

from ...after_response import defer
from ...auth import Principal
from ...backends import SandboxBackend, lease_for_run
from ...backends.tasks import BackgroundTasks
from ...errors import BadRequest, ExecutorFailed, LanguageUnavailable, PayloadTooLarge
from ...executor import ExecutorClient, ExecutorError, ExecutorResult, OutputChunk
from ...metrics import Metrics, lap, note_phase, timed
from ...runtime_sessions import RuntimeRun, RuntimeSessions
from ...sessions import Session, SessionStore, check_entity_id
from ...settings import Settings
from ..files.service import FileService
from ..state import StateService
from ..state.schemas import StateOutcome
from .recent import ExecutionRecord, RecentExecutions
from .requests import (
    cut_output,
    file_entry,
    limit_notice,
    normalize_args,
    normalize_timeout,
    with_notice,
)
from .schemas import ExecRequest, ExecResponse
from .staging import OutputFiles, delivery_failure, stage_in, stage_out

__all__ = ["ExecService", "OutputListener"]

logger = logging.getLogger(__name__)



@attrs.frozen
class _Validated:
    lang: str
    code: str
    args: list[str]
    timeout: float


@attrs.frozen
class _Job:
    """One ``/exec`` request on its way through the service (what every step reads)."""

    principal: Principal
    request: ExecRequest
    request_id: str
    valid: _Validated
    received: float  # time.monotonic() at receipt
    listener: OutputListener | None = None
    on_acquired: Callable[[], None] | None = None


@attrs.define
class _Record:
    """What the recent-executions list will say about this execution."""

    request_id: str
    tenant: str
    session_id: str
    language: str
    received: float  # time.monotonic() at receipt
    streamed: bool
    pool_hit: bool
    status: str = "failed"
    received_at: float = attrs.field(
        default=attrs.Factory(lambda self: time.time() - (time.monotonic() - self.received),
                              takes_self=True))


class OutputListener(Protocol):
    """Receives an execution's output while it runs (``/exec/stream``)."""

    def acquired(self) -> None:
        """A sandbox was claimed: the request was accepted and the program is about to run."""

    def output(self, stream: str, text: str) -> None:
        """A piece of ``stdout`` or ``stderr``, in order, as the program produced it."""


def _abandon(recording: asyncio.Task[None] | None) -> None:
    """A new session's record after a failed execution: not waited for (its own error,
    if any, is not the one to report)."""
    if recording is None:
        return
    if not recording.done():
        recording.cancel()
    elif not recording.cancelled():
        recording.exception()  # retrieved: no "exception was never retrieved" warning


class ExecService:
    """Runs one ``/exec`` request end to end."""

    def __init__(self, settings: Settings, backend: SandboxBackend, sessions: SessionStore,
                 files: FileService, state: StateService | None = None, *,
                 metrics: Metrics | None = None, recent: RecentExecutions | None = None,
                 runtime: RuntimeSessions | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.sessions = sessions
        self.files = files
        #: Python session state; None when ``STATE_ENABLED`` is off.
        self.state = state if state is not None and state.settings.enabled else None
        self.tmp_dir = settings.data_dir / "tmp"
        self.metrics = metrics  # phase timings (``timed``, ``lap``)
        self.recent = recent  # finished executions, for operators (None: not recorded)
        self.runtime = runtime  # runtime sessions (None: ``stateful`` is not served)
        self._tasks = BackgroundTasks(logger)

    async def close(self) -> None:
        """Until the records written after answers are done (at shutdown)."""
        await self._tasks.wait()

    async def _session(self, principal: Principal, request: ExecRequest,
                       ) -> tuple[Session, asyncio.Task[None] | None]:
        """The execution's session, and the task writing its record when it is new.

        A brand-new session (no ``session_id``, no ``entity_id``) is recorded while the
        code runs (awaited before the answer): one Valkey round trip fewer before the
        sandbox is reached.
        """
        if not request.session_id and not request.entity_id:
            session = self.sessions.fresh(principal.tenant)
            return session, asyncio.create_task(self.sessions.record(session))
        return await self.session_for(principal.tenant, request.session_id,
                                      principal.acting_user(request.user_id),
                                      request.entity_id), None

    async def session_for(self, tenant: str, session_id: str | None, user_id: str | None,
                          entity_id: str | None) -> Session:
        """The caller's own session, else the latest of (user, entity), else a new one; a
        session whose record expired but whose files or state did not is adopted back."""
        async def outlived(expired: str) -> bool:
            return (await self.files.has_files(tenant, expired)
                    or (self.state is not None and await self.state.exists(tenant, expired)))

        # Adopted before anything else is looked for: no new session (and no entity's
        # latest pointing at it) is made for a request that names one to adopt.
        return await self.sessions.resolve(tenant, session_id, user_id, entity_id,
                                           adoptable=outlived)

    async def _validate(self, request: ExecRequest, tenant: str) -> _Validated:
        language = resolve_language(request.lang)
        if language is None:
            raise BadRequest(f"unsupported language {request.lang!r}; supported: "
                             f"{', '.join(LANGUAGES)}")
        status = (await self.backend.languages())[language.code]
        if not status.available:
            raise LanguageUnavailable(f"{language.name} ({language.code}) is not available "
                                      f"here: {status.reason}")
        if len(request.code.encode("utf-8", "surrogatepass")) > self.settings.max_code_size:
            raise PayloadTooLarge(f"code is larger than MAX_CODE_SIZE "
                                  f"({self.settings.max_code_size} bytes)")
        if "\x00" in request.code:
            raise BadRequest("code must not contain NUL bytes")
        check_entity_id(request.entity_id)
        timeout = normalize_timeout(request.timeout, self.settings.default_execution_time,
                                    self.max_timeout(tenant))
        return _Validated(language.code, request.code, normalize_args(request.args), timeout)

    def _memory_mb(self, tenant: str) -> int:
        """The sandbox's memory: ``MAX_MEMORY_MB``, or the tenant's own (lower) limit."""
        own = self.settings.tenants.limits(tenant).max_memory_mb
        return own if 0 < own < self.settings.max_memory_mb else self.settings.max_memory_mb

    def max_timeout(self, tenant: str) -> int:
        """``MAX_EXECUTION_TIME``, or the tenant's own (lower) maximum."""
        own = self.settings.tenants.limits(tenant).max_timeout
        return min(own, self.settings.max_execution_time) if own > 0 \
            else self.settings.max_execution_time

    @timed
    async def execute(self, principal: Principal, request: ExecRequest, request_id: str,
                      listener: OutputListener | None = None, *,
                      on_acquired: Callable[[], None] | None = None,
                      profile: str = "default") -> ExecResponse:
        """``on_acquired``: called once a sandbox is claimed (every request error has been
        raised by then), like ``listener.acquired`` but without streaming the output.
        ``profile``: the execution profile serving the request (``app/profiles.py``)."""
        received = time.monotonic()
        valid = await self._validate(request, principal.tenant)
        hint = request.runtime_session_hint if profile == "stateful" else None
        run: RuntimeRun | None = None
        if hint is not None and self.runtime is not None:
            run = await self.runtime.begin(principal.tenant, hint, valid.lang,
                                           principal.user_id)
            session, recording = run.session, None
        else:
            session, recording = await self._session(principal, request)
        job = _Job(principal, request, request_id, valid, received, listener, on_acquired)
        try:
            return await self._execute_in(job, session, recording, run)
        except BaseException:
            _abandon(recording)
            if run is not None and not run.ended:  # failed before its sandbox was used
                await run.end(ok=False)
            raise

    async def _execute_in(self, job: _Job, session: Session,
                          recording: asyncio.Task[None] | None,
                          run: RuntimeRun | None) -> ExecResponse:
        """The execution in its session (``recording``: its record, still being written;
        ``run``: its runtime session, whose sandbox is already claimed)."""
        principal, request, request_id, valid = job.principal, job.request, job.request_id, \
            job.valid
        listener, on_acquired = job.listener, job.on_acquired
        lap("prepare", language=valid.lang, session_id=session.id)
        state = self.state if valid.lang == "py" else None
        # Checked against its signature here, before any sandbox is involved.
        previous = await state.for_execution(principal.tenant, session) if state else None
        lap("state")
        # Inputs that no work dir can hold together (``a`` and ``a/b.txt``) are left
        # out here, before a sandbox is taken, and reported in ``skipped_files``.
        inputs, skipped_inputs = await self.files.resolve_inputs(  # a workspace has the rest
            principal, session if run is None else attrs.evolve(session, is_new=True),
            request.files or [])
        lap("prepare")
        started = time.monotonic()
        lease = run.lease if run is not None else await self.backend.acquire(
            valid.lang, session.id, principal.tenant,
            lease_seconds=lease_for_run(valid.timeout, self.settings.compile_timeout))
        acquired = time.monotonic()
        lap("acquire", pool_hit=lease.pool_hit)
        record = _Record(request_id, principal.tenant, session.id, valid.lang, job.received,
                         streamed=listener is not None, pool_hit=lease.pool_hit)
        try:
            if listener is not None:
                listener.acquired()
            if on_acquired is not None:
                on_acquired()
            if run is not None:
                await run.stage_in(self.files.open, inputs)
            else:
                await stage_in(lease.executor, self.files.open, inputs)
            lap("stage_in")
            result = await self._run_code(lease.executor, listener, dict(
                lang=valid.lang, code=valid.code, args=valid.args, timeout=valid.timeout,
                request_id=request_id,
                transport_timeout=valid.timeout + self.settings.compile_timeout + 30,
                state=previous.blob if previous is not None else None,
                capture=state.capture() if state is not None else None))
            for phase, seconds in (("state_restore", result.state_restore_time),
                                   ("state_capture", result.state_capture_time)):
                if seconds is not None:  # inside the run: the sandbox's part of the state
                    note_phase(phase, seconds)
            lap("run")
            if recording is not None:  # the new session's record, written meanwhile
                await recording
            outputs = await stage_out(
                lease.executor, self.files.store, tenant=principal.tenant,
                session_id=session.id, user_id=principal.acting_user(request.user_id),
                inputs=run.output_inputs(inputs) if run is not None else inputs,
                max_files=self.settings.max_output_files,
                max_file_size=self.settings.max_output_file_size, tmp_dir=self.tmp_dir,
                listing=result.files, baseline=run.baseline() if run is not None else None,
                still_stored=self.files.still_stored)
            if skipped_inputs:
                outputs = attrs.evolve(outputs, skipped=[*skipped_inputs, *outputs.skipped])
            await self.files.deleted_in_sandbox(session.id, outputs.deleted)
            lap("stage_out")
            if run is not None:
                await run.checkpoint(result.files, outputs.stored)
                lap("checkpoint")
            record.status = "done"
        except ExecutorError as exc:
            record.status = "sandbox_failed"
            # The executor's own words stay in the log: the client gets a plain message.
            logger.warning("sandbox failed", extra={
                "request_id": request_id, "session_id": session.id, "detail": str(exc)[:2000]})
            raise ExecutorFailed("the sandbox failed; try again", retry_after=1) from exc
        except asyncio.CancelledError:
            record.status = "cancelled"  # the streaming client went away
            raise
        finally:
            if run is not None:
                await run.end(ok=record.status == "done")
            else:
                await self.backend.release(lease)
            if record.status != "done":
                await self._record(record, None)
        logger.info("executed", extra={
            "request_id": request_id, "tenant": principal.tenant, "session_id": session.id,
            "language": valid.lang, "status": result.status, "pool_hit": lease.pool_hit,
            "acquire_ms": round((acquired - started) * 1000, 2),
            "run_ms": round((time.monotonic() - acquired) * 1000, 2)})
        outcome = (await state.after_execution(principal.tenant, session.id, result, previous)
                   if state is not None else None)
        lap("state")
        version = (await self.backend.languages())[valid.lang].version
        notice = limit_notice(result.status, valid.timeout, self._memory_mb(principal.tenant))
        response = self._response(session.id, valid.lang, version, result, outputs,
                                  state=outcome, notice=notice)
        if run is not None:
            response = attrs.evolve(response, runtime_session_id=run.record.id,
                                    runtime_status=run.status)
        self._record_later(attrs.evolve(record, status=result.status), result.wall_time)
        return response

    @staticmethod
    async def _run_code(executor: ExecutorClient, listener: OutputListener | None,
                        call: dict[str, Any]) -> ExecutorResult:
        """The executor's run of the code: one answer, or streamed to ``listener``."""
        if listener is None:
            return await executor.execute(**call)
        # Closed on the way out, also when cancelled: the executor then stops the program.
        async with contextlib.aclosing(executor.execute_stream(**call)) as events:
            async for event in events:
                if isinstance(event, OutputChunk):
                    listener.output(event.stream, event.text)
                else:
                    return event
        raise ExecutorError("the executor's stream ended without a result")

    @staticmethod
    def _entry(record: _Record, wall_time: float | None) -> ExecutionRecord:
        return ExecutionRecord(
            ts=round(record.received_at, 3), request_id=record.request_id,
            tenant=record.tenant, session_id=record.session_id, language=record.language,
            status=record.status,
            duration_ms=round((time.monotonic() - record.received) * 1000, 2),
            wall_time=wall_time, pool_hit=record.pool_hit, streamed=record.streamed)

    async def _record(self, record: _Record, wall_time: float | None) -> None:
        """Record a failed or cancelled execution before its error goes out."""
        if self.recent is not None:
            # Shielded: an execution cancelled by its client still leaves its record.
            await asyncio.shield(self.recent.record(self._entry(record, wall_time)))

    def _record_later(self, record: _Record, wall_time: float | None) -> None:
        """Record a finished execution once its answer is sent (one Valkey round trip
        less on the way out)."""
        recent = self.recent
        if recent is not None:
            entry = self._entry(record, wall_time)
            defer(lambda: self._tasks.spawn(recent.record(entry)))

    def _response(self, session_id: str, lang: str, version: str | None,
                  result: ExecutorResult, outputs: OutputFiles, *,
                  state: StateOutcome | None, notice: str | None = None) -> ExecResponse:
        limit = self.settings.response_output_limit
        return ExecResponse(
            session_id=session_id,
            stdout=cut_output(result.stdout, limit, result.stdout_truncated),
            stderr=with_notice(cut_output(result.stderr, limit, result.stderr_truncated),
                                notice),
            files=[file_entry(meta) for meta in outputs.stored]
            + [file_entry(meta, inherited=True) for meta in outputs.inherited],
            skipped_files=outputs.skipped,
            deleted_files=[item.path for item in outputs.deleted],
            artifact_delivery=delivery_failure(outputs),
            code=result.exit_code, signal=result.signal, status=result.status,
            message=result.message, wall_time=result.wall_time, cpu_time=result.cpu_time,
            memory=result.max_rss, language=lang, version=version,
            has_state=state.has_state if state is not None else None,
            state_size=state.state_size if state is not None else None,
            state_errors=list(state.errors) if state is not None else None,
        )
