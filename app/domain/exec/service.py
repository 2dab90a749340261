"""The execution service: validate, pick the session, claim a sandbox, run, answer.

It knows the backend only through the ``SandboxBackend`` seam and the executor
only through ``ExecutorClient``. Everything that is the request's fault raises a
typed error here; everything that is the program's fault is a 200 result.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from typing import Any

import attrs

from sidecar.languages import LANGUAGES, resolve_language

from ...auth import Principal
from ...backends import SandboxBackend
from ...errors import BadRequest, ExecutorFailed, LanguageUnavailable, PayloadTooLarge
from ...executor import ExecutorError, ExecutorResult
from ...ids import is_valid_id
from ...sessions import Session, SessionStore
from ...settings import Settings
from ...storage import FileMeta
from ..files.service import FileService
from .schemas import ExecRequest, ExecResponse
from .staging import WORKDIR, OutputFiles, stage_in, stage_out

__all__ = ["ExecService", "cut_output", "normalize_timeout"]

logger = logging.getLogger(__name__)

_ENTITY_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_MAX_ARGS = 256
_MAX_ARGS_BYTES = 64 * 1024


def normalize_timeout(value: float | None, default: int, maximum: int) -> float:
    """Seconds from seconds-or-milliseconds (values above 1000 are ms), clamped."""
    if value is None:
        return float(default)
    if value <= 0:
        raise BadRequest("timeout must be positive (seconds, or milliseconds above 1000)")
    seconds = value / 1000 if value > 1000 else value
    return float(min(seconds, maximum))


def normalize_args(value: list[str] | str | None) -> list[str]:
    """argv for the program; a string is split like a command line (never run by a shell)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise BadRequest(f"args: {exc}") from exc
    else:
        args = list(value)
    if len(args) > _MAX_ARGS or sum(len(a.encode()) for a in args) > _MAX_ARGS_BYTES:
        raise PayloadTooLarge(f"args: at most {_MAX_ARGS} arguments and {_MAX_ARGS_BYTES} bytes")
    if any("\x00" in a for a in args):
        raise BadRequest("args must not contain NUL bytes")
    return args


def cut_output(text: str, limit: int, cut_in_sandbox: bool) -> str:
    """At most ``limit`` bytes of UTF-8, with a visible marker where anything was cut."""
    data = text.encode("utf-8", "replace")
    marker = ""
    if len(data) > limit:
        marker = f"\n[output truncated: {len(data) - limit} more bytes not shown]\n"
        text = data[:limit].decode("utf-8", "ignore")
    if cut_in_sandbox:
        marker += "\n[output limit reached: the program was stopped]\n"
    return text + marker


def _file_entry(meta: FileMeta) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": meta.id, "name": meta.name, "path": f"{WORKDIR}/{meta.name}",
        "storage_session_id": meta.session_id, "session_id": meta.session_id,
        "size": meta.size, "content_type": meta.content_type, "inherited": False}
    if meta.modified_from is not None:
        entry["modified_from"] = meta.modified_from
    return entry


@attrs.frozen
class _Validated:
    lang: str
    code: str
    args: list[str]
    timeout: float


class ExecService:
    """Runs one ``/exec`` request end to end."""

    def __init__(self, settings: Settings, backend: SandboxBackend, sessions: SessionStore,
                 files: FileService) -> None:
        self.settings = settings
        self.backend = backend
        self.sessions = sessions
        self.files = files
        self.tmp_dir = settings.data_dir / "tmp"

    async def _session(self, principal: Principal, request: ExecRequest) -> Session:
        session = await self.sessions.resolve(principal.tenant, request.session_id,
                                              request.user_id, request.entity_id)
        if (session.is_new and request.session_id and is_valid_id(request.session_id)
                and await self.files.files.list_session(principal.tenant, request.session_id)):
            # The session's record expired but its files did not: it is still the caller's.
            return await self.sessions.adopt(principal.tenant, request.session_id)
        return session

    async def _validate(self, request: ExecRequest) -> _Validated:
        language = resolve_language(request.lang)
        if language is None:
            raise BadRequest(f"unsupported language {request.lang!r}; supported: "
                             f"{', '.join(LANGUAGES)}")
        status = (await self.backend.languages())[language.code]
        if not status.available:
            raise LanguageUnavailable(f"{language.name} ({language.code}) is not available "
                                      f"here: {status.reason}")
        if len(request.code.encode("utf-8", "surrogatepass")) > self.settings.max_code_size:
            raise PayloadTooLarge(f"code is larger than {self.settings.max_code_size} bytes")
        if "\x00" in request.code:
            raise BadRequest("code must not contain NUL bytes")
        if request.entity_id is not None and not _ENTITY_ID.fullmatch(request.entity_id):
            raise BadRequest("entity_id must be 1-40 characters of [A-Za-z0-9_-]")
        timeout = normalize_timeout(request.timeout, self.settings.default_execution_time,
                                    self.settings.max_execution_time)
        return _Validated(language.code, request.code, normalize_args(request.args), timeout)

    async def execute(self, principal: Principal, request: ExecRequest,
                      request_id: str) -> ExecResponse:
        valid = await self._validate(request)
        session = await self._session(principal, request)
        inputs = await self.files.inputs(principal, session, request.files or [])
        started = time.monotonic()
        lease = await self.backend.acquire(valid.lang, session.id)
        acquired = time.monotonic()
        try:
            await stage_in(lease.executor, self.files.files, inputs)
            result = await lease.executor.execute(
                lang=valid.lang, code=valid.code, args=valid.args, timeout=valid.timeout,
                request_id=request_id,
                transport_timeout=valid.timeout + self.settings.compile_timeout + 30)
            outputs = await stage_out(
                lease.executor, self.files.files, tenant=principal.tenant,
                session_id=session.id, user_id=request.user_id, inputs=inputs,
                max_files=self.settings.max_output_files,
                max_file_size=self.settings.max_output_file_size, tmp_dir=self.tmp_dir)
        except ExecutorError as exc:
            raise ExecutorFailed(f"the sandbox failed: {exc}", retry_after=1) from exc
        finally:
            await self.backend.release(lease)
        logger.info("executed", extra={
            "request_id": request_id, "tenant": principal.tenant, "session_id": session.id,
            "language": valid.lang, "status": result.status, "pool_hit": lease.pool_hit,
            "acquire_ms": round((acquired - started) * 1000, 2),
            "run_ms": round((time.monotonic() - acquired) * 1000, 2)})
        version = (await self.backend.languages())[valid.lang].version
        return self._response(session.id, valid.lang, version, result, outputs)

    def _response(self, session_id: str, lang: str, version: str | None,
                  result: ExecutorResult, outputs: OutputFiles) -> ExecResponse:
        limit = self.settings.response_output_limit
        return ExecResponse(
            session_id=session_id,
            stdout=cut_output(result.stdout, limit, result.stdout_truncated),
            stderr=cut_output(result.stderr, limit, result.stderr_truncated),
            files=[_file_entry(meta) for meta in outputs.stored],
            skipped_files=outputs.skipped,
            code=result.exit_code, signal=result.signal, status=result.status,
            message=result.message, wall_time=result.wall_time, cpu_time=result.cpu_time,
            memory=result.max_rss, language=lang, version=version,
        )
