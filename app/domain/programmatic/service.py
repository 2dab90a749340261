"""Programmatic tool calling: start a run, continue it round after round, cancel it.

A run is Python (or bash) code that calls the client's tools as functions. It runs in
one sandbox from start to end, the program alive across rounds: each step runs
until the program waits for tool results (``tool_call_required``: the round's calls
and a continuation token) or ends (``completed``, or ``error`` with a message). Each
step's time is capped by the request's timeout.

Between steps nothing lives in this process. The paused sandbox stays claimed by
the backend under a lease of ``PTC_LEASE_SECONDS`` (``hold``) and is reaped when it
ends; the run's record and the token's single use are in Valkey (``store.py``); the
signed token (``tokens.py``) says where the sandbox is, so any replica resumes it.
A run that fails, is refused or is cancelled has its sandbox freed and is forgotten
by ``teardown.py``.
Outputs and Python state are handled as in ``/exec`` when the run completes.

With the ``stateful`` profile and a ``runtime_session_hint`` the run goes on in that
runtime session (``app/runtime_sessions``): its kept sandbox (or one restored from its
checkpoint) is the run's, the runtime session's lock is held from the first step to the
last (extended over each pause), and at the end the workspace is checkpointed and the
sandbox kept instead of released; a failed or cancelled run's sandbox is dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import attrs

from sidecar.contract import resolve_language

from ...auth import Principal
from ...backends import SandboxLease, lease_for_run
from ...errors import BadRequest, ExecutorFailed, LanguageUnavailable, PayloadTooLarge
from ...executor import ExecutorError
from ...executor.programmatic import ProgrammaticStep, continue_run, start_run
from ...ids import new_id
from ...sessions import Session, check_entity_id
from ...settings import Settings
from ..exec.requests import normalize_timeout
from ..exec.service import ExecService
from ..exec.staging import stage_in, stage_out
from .answers import ended, paused
from .failures import run_failure
from .schemas import ProgrammaticRequest, ProgrammaticResponse
from .store import RequestRecord, RunRecord, RunStore
from .teardown import MARGIN, RunTeardown
from .tokens import Continuation, ContinuationTokens, TokenRefused
from .wire import failed as _failed
from .wire import tool_names, wire_results
from .workspace import Workspace

__all__ = ["ProgrammaticService"]

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

Step = Callable[[SandboxLease], Awaitable[ProgrammaticStep]]


class ProgrammaticService:
    """Runs ``/exec/programmatic`` requests; shares ``/exec``'s backend, files and state."""

    def __init__(self, settings: Settings, exec_service: ExecService, runs: RunStore,
                 tokens: ContinuationTokens) -> None:
        self.settings = settings
        self.exec = exec_service
        self.runtime = exec_service.runtime
        self.config = settings.programmatic
        self.backend = exec_service.backend
        self.sessions = exec_service.sessions
        self.files = exec_service.files
        self.state = exec_service.state
        self.runs = runs
        self.tokens = tokens
        self.teardown = RunTeardown(self.backend, self.runtime, runs)
        self.tmp_dir = settings.data_dir / "tmp"

    async def run(self, principal: Principal, request: ProgrammaticRequest,
                  request_id: str | None, *, on_acquired: Callable[[], None] | None = None,
                  workspace: Workspace | None = None,
                  profile: str = "default") -> ProgrammaticResponse:
        """A new run, or the next step of one (``continuation_token``). ``on_acquired``
        is called once the step has its sandbox (every request error raised by then).
        ``workspace``: the call is attached to one (``tools`` may then be empty)."""
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            request_id = None  # not a usable key: the run just cannot be cancelled by it
        if request.continuation_token is not None:
            return await self._continue(principal, request, request_id, on_acquired)
        hint = None if profile != "stateful" else (  # an attached workspace's own, first
            workspace.runtime_hint() if workspace is not None else request.runtime_session_hint)
        return await self._start(principal, request, request_id, on_acquired, workspace,
                                 hint=hint)

    # -- the first step -------------------------------------------------------------

    async def _start(self, principal: Principal, request: ProgrammaticRequest,
                     request_id: str | None, acquired: Callable[[], None] | None,
                     workspace: Workspace | None, *, hint: str | None = None,
                     ) -> ProgrammaticResponse:
        code = request.code
        if not code or not code.strip():
            return _failed(None, "no code to run")
        lang = await self._language(request.lang)
        if len(code.encode("utf-8", "surrogatepass")) > self.settings.max_code_size:
            raise PayloadTooLarge(f"code is larger than MAX_CODE_SIZE "
                                  f"({self.settings.max_code_size} bytes)")
        if "\x00" in code:
            raise BadRequest("code must not contain NUL bytes")
        tools = tool_names(request.tools, lang, allow_none=workspace is not None)
        timeout = normalize_timeout(request.timeout, self.settings.default_execution_time,
                                    self.exec.max_timeout(principal.tenant))
        rt = (await self.runtime.begin(principal.tenant, hint, lang, principal.user_id)
              if hint is not None and self.runtime is not None else None)
        try:
            session = rt.session if rt is not None else await self._session(principal, request)
            state = self.state if lang == "py" else None
            previous = await state.for_execution(principal.tenant, session) if state else None
            inputs = await self.files.inputs(  # a runtime session's workspace has the rest
                principal, session if rt is None else attrs.evolve(session, is_new=True),
                request.files or [])
        except BaseException:
            if rt is not None:
                await rt.end(ok=False)
            raise
        record = RunRecord(new_id(), principal.tenant, session.id, lang,
                           principal.acting_user(request.user_id),
                           tuple(tools), timeout, tuple(inputs),
                           workspace_id=workspace.id if workspace else None,
                           workspace_instance_id=workspace.instance_id if workspace else None,
                           runtime=rt.ref() if rt is not None else None)
        lease = rt.lease if rt is not None else await self.backend.acquire(
            lang, session.id, principal.tenant,
            lease_seconds=lease_for_run(timeout, self.exec.settings.compile_timeout),
            deadline_seconds=self.config.max_lifetime)

        async def first(lease: SandboxLease) -> ProgrammaticStep:
            await self.runs.save_run(record, self.config.max_lifetime)
            if rt is not None:
                await rt.stage_in(self.files.open, inputs)
            else:
                await stage_in(lease.executor, self.files.open, inputs)
            return await start_run(
                lease.executor, lang=lang, code=code, args=[], timeout=timeout,
                request_id=request_id or record.run_id, transport_timeout=timeout + MARGIN,
                tools=tools, max_rounds=self.config.max_rounds,
                state=previous.blob if previous is not None else None,
                capture=state.capture() if state is not None else None)

        return await self._step(record, lease, request_id, 1, first, acquired=acquired)

    async def _language(self, lang: str | None) -> str:
        language = resolve_language(lang or "py")
        if language is None or language.code not in ("py", "bash"):
            raise BadRequest("programmatic tool calling runs 'py' or 'bash' code")
        status = (await self.backend.languages())[language.code]
        if not status.available:
            raise LanguageUnavailable(f"{language.name} is not available here: {status.reason}")
        return language.code

    async def _session(self, principal: Principal, request: ProgrammaticRequest) -> Session:
        tenant, wanted = principal.tenant, request.session_id
        check_entity_id(request.entity_id)
        if not wanted and not request.entity_id:
            session = self.sessions.fresh(tenant)
            await self.sessions.record(session)
            return session
        return await self.exec.session_for(tenant, wanted, principal.acting_user(request.user_id),
                                           request.entity_id)

    # -- the next steps ---------------------------------------------------------------

    async def _continue(self, principal: Principal, request: ProgrammaticRequest,
                        request_id: str | None, acquired: Callable[[], None] | None,
                        ) -> ProgrammaticResponse:
        assert request.continuation_token is not None
        results = wire_results(request.tool_results)
        try:
            token = self.tokens.read(request.continuation_token, principal.tenant)
        except TokenRefused as exc:
            return _failed(None, str(exc))
        cancelled = await self.runs.cancelled(token.run_id)
        if not await self.runs.use_nonce(token.nonce, self.config.lease_seconds + MARGIN):
            return _failed(token.session_id, "the run was cancelled" if cancelled
                           else "this continuation token was already used")
        if cancelled:  # its cancel did not get to free the sandbox: it is freed here
            await self.teardown.destroy_paused(token, await self.runs.load_run(token.run_id))
            return _failed(token.session_id, "the run was cancelled")
        # The token is used: whatever refuses the run now also frees its sandbox.
        record = await self.runs.load_run(token.run_id)
        if record is None or record.tenant != principal.tenant:
            await self.teardown.destroy_paused(token)
            return _failed(token.session_id, "the paused run is gone")
        if await self.runs.cancelled(token.run_id):
            await self.teardown.destroy_paused(token, record)
            return _failed(token.session_id, "the run was cancelled")
        # The step's lease covers the step and its stage-out, as a first step's claim does
        # (``lease_for_run``): a replica that dies mid-step leaves the sandbox to the
        # reaper that soon, not after the run's whole maximum lifetime.
        step_seconds = lease_for_run(record.timeout, self.exec.settings.compile_timeout)
        lease = await self.backend.resume(token.location, token.session_id, token.tenant,
                                          step_seconds)
        if lease is None:
            await self.teardown.end(record)
            return _failed(token.session_id, "the paused run is gone: its lease ended and "
                                             "its sandbox was reaped")
        try:
            if record.runtime is not None and self.runtime is not None:  # the step's hold
                await self.runtime.records.extend(record.runtime.key, record.runtime.token,
                                                  record.timeout + self.config.lease_seconds)
            # Still counted among the tenant's paused runs (until it ends): a step never
            # finds its own pause refused because others paused meanwhile.
            await self.runs.pause(record.tenant, record.run_id, 0, step_seconds)
        except BaseException:  # the token is used: nobody else would ever free the sandbox
            await self.teardown.abandon(record, lease, request_id)
            raise

        async def follow(lease: SandboxLease) -> ProgrammaticStep:
            return await continue_run(lease.executor, results, timeout=record.timeout,
                                      transport_timeout=record.timeout + MARGIN,
                                      tools=record.tools)

        return await self._step(record, lease, request_id, token.round + 1, follow,
                                acquired=acquired)

    async def _step(self, record: RunRecord, lease: SandboxLease, request_id: str | None,
                    round_: int, step: Step, *, acquired: Callable[[], None] | None,
                    ) -> ProgrammaticResponse:
        """Run one step in the claimed sandbox; then pause (hold it) or finish (release it)."""
        try:
            if acquired is not None:
                acquired()
            if request_id is not None:
                await self.runs.remember_request(record.tenant, request_id, RequestRecord(
                    record.run_id, record.session_id, lease.executor_address,
                    self.backend.locate(lease)), self.config.max_lifetime)
                if await self.runs.request_cancelled(record.tenant, request_id):
                    # Its cancel came first (``cancel``): the step never runs.
                    await self.teardown.abandon(record, lease, request_id)
                    return _failed(record.session_id, "the run was cancelled")
            outcome = await step(lease)
        except ExecutorError as exc:
            await self.teardown.abandon(record, lease, request_id)
            logger.warning("programmatic run failed in its sandbox", extra={
                "run_id": record.run_id, "session_id": record.session_id,
                "detail": str(exc)[:2000]})
            raise ExecutorFailed("the sandbox failed; try again", retry_after=1) from exc
        except BaseException:
            await self.teardown.abandon(record, lease, request_id)
            raise
        logger.info("programmatic step", extra={
            "run_id": record.run_id, "tenant": record.tenant, "session_id": record.session_id,
            "round": round_, "status": outcome.result.status,
            "tool_calls": len(outcome.tool_calls), "workspace_id": record.workspace_id})
        if outcome.paused:
            if await self._was_cancelled(record, lease, request_id):
                # A cancel that came before the executor had its run (or while it ran):
                # the run ends here, its sandbox with it.
                return _failed(record.session_id, "the run was cancelled")
            return await self._pause(record, lease, request_id, round_, outcome)
        return await self._finish(record, lease, outcome, request_id)

    async def _was_cancelled(self, record: RunRecord, lease: SandboxLease,
                             request_id: str | None) -> bool:
        try:
            cancelled = await self.runs.cancelled(record.run_id)
        except BaseException:
            await self.teardown.abandon(record, lease, request_id)
            raise
        if cancelled:
            await self.teardown.abandon(record, lease, request_id)
        return cancelled

    def _paused_cap(self, tenant: str) -> int:
        own = self.config.max_paused_per_tenant
        return own if own > 0 else self.settings.tenants.limits(tenant).concurrent_executions

    async def _pause(self, record: RunRecord, lease: SandboxLease, request_id: str | None,
                     round_: int, outcome: ProgrammaticStep) -> ProgrammaticResponse:
        seconds = self.config.lease_seconds
        try:
            counted = await self.runs.pause(record.tenant, record.run_id,
                                            self._paused_cap(record.tenant), seconds)
            if not counted:
                await self.teardown.abandon(record, lease, request_id)
                return _failed(record.session_id, "too many paused runs for this tenant: a "
                                                  "paused run holds a sandbox (its "
                                                  "concurrency limit counts them)")
            location = await self.backend.hold(lease, seconds)
            if record.runtime is not None and self.runtime is not None:  # over the pause
                await self.runtime.records.extend(record.runtime.key, record.runtime.token,
                                                  seconds + MARGIN)
        except BaseException:
            await self.teardown.abandon(record, lease, request_id)
            raise
        nonce = new_id()
        token = self.tokens.issue(Continuation(
            tenant=record.tenant, session_id=record.session_id, run_id=record.run_id,
            nonce=nonce, location=location, lang=record.lang, round=round_,
            expires_at=time.time() + seconds))
        if request_id is not None:
            await self.runs.remember_request(record.tenant, request_id, RequestRecord(
                record.run_id, record.session_id, lease.executor_address, location, nonce),
                self.config.max_lifetime)
        if await self.runs.cancelled(record.run_id) and await self.runs.use_nonce(
                nonce, seconds + MARGIN):
            # Cancelled while it paused (the cancel may have missed the nonce): free it.
            await self.teardown.abandon_paused(record, location, request_id)
            return _failed(record.session_id, "the run was cancelled")
        return paused(record, outcome, token, output_limit=self.settings.response_output_limit)

    async def _finish(self, record: RunRecord, lease: SandboxLease,
                      outcome: ProgrammaticStep, request_id: str | None,
                      ) -> ProgrammaticResponse:
        result, tenant = outcome.result, record.tenant
        failure = run_failure(outcome)
        outputs = None
        rt = (await self.runtime.resume(record.runtime, lease, list(record.inputs))
              if record.runtime is not None and self.runtime is not None else None)
        ok = False
        try:
            if failure is None:
                outputs = await stage_out(
                    lease.executor, self.files.store, tenant=tenant,
                    session_id=record.session_id, user_id=record.user_id,
                    inputs=rt.output_inputs(list(record.inputs)) if rt is not None
                    else list(record.inputs), max_files=self.settings.max_output_files,
                    max_file_size=self.settings.max_output_file_size, tmp_dir=self.tmp_dir,
                    listing=result.files, baseline=rt.baseline() if rt is not None else None,
                    still_stored=self.files.still_stored)
                await self.files.deleted_in_sandbox(record.session_id, outputs.deleted)
            if rt is not None and failure is None:
                await rt.checkpoint(result.files, outputs.stored if outputs is not None else [])
            # A failed run (a limit, a cancel) is not kept: its sandbox is dropped and the
            # workspace stays as the last checkpoint left it (its partial files were never
            # delivered, and kept they would become the baseline, never reported).
            ok = failure is None
        except ExecutorError as exc:
            raise ExecutorFailed("the sandbox failed; try again", retry_after=1) from exc
        finally:
            if rt is not None:
                await rt.end(ok=ok)
                await self.teardown.end(record, request_id)
            else:
                await self.teardown.abandon(record, lease, request_id)
        state = None
        if record.lang == "py" and self.state is not None:
            session = Session(record.session_id, tenant, 0.0)
            previous = await self.state.for_execution(tenant, session)
            state = await self.state.after_execution(tenant, record.session_id, result, previous)
        return ended(record, outcome, failure, outputs, state,
                     output_limit=self.settings.response_output_limit,
                     memory_mb=self.settings.max_memory_mb)

    # -- cancel -----------------------------------------------------------------------

    async def cancel(self, principal: Principal, request_id: str | None) -> bool:
        """Stop the run behind a client request id, paused or running; False if none."""
        if not request_id or not _REQUEST_ID.fullmatch(request_id):
            raise BadRequest("the request id (X-LibreChat-Code-Request-ID or request_id) is "
                             "missing or malformed")
        tenant = principal.tenant
        # Written before the look-up, as a step writes its request before it checks this:
        # a cancel that overtakes its request (still queued for a sandbox, staging its
        # files) is seen by that request's step, which then ends the run before it starts.
        # The mark lasts as long as a request can take to get there, and goes at once when
        # the request is known (a later request reusing the id is not touched).
        await self.runs.cancel_request(tenant, request_id,
                                       self.exec.settings.queue_timeout + MARGIN)
        found = await self.runs.request(tenant, request_id)
        if found is None:
            return False
        await self.runs.forget_cancelled_request(tenant, request_id)
        record = await self.runs.load_run(found.run_id)
        if record is None or record.tenant != tenant:  # the run is over: nothing to stop
            await self.runs.forget_request(tenant, request_id)
            return False
        await self.runs.cancel(found.run_id, self.config.max_lifetime)
        if found.nonce is not None and found.location is not None and await self.runs.use_nonce(
                found.nonce, self.config.lease_seconds + MARGIN):
            # It was paused: nobody else can resume it now; it is destroyed here.
            await self.teardown.abandon_paused(record, found.location, request_id)
        elif found.location:
            # A running step (verified to be this session's sandbox still) ends with
            # "Cancelled"; its replica releases the sandbox. A step not started yet sees
            # the cancellation when it pauses.
            await self.backend.cancel_program(found.location, found.session_id, tenant)
        logger.info("programmatic run cancelled", extra={"run_id": found.run_id})
        return True
