"""HTTP client for one sandbox's executor, over a unix socket or TCP.

It speaks the executor contract (``POST /execute``, ``POST /execute/stream``, ``POST /keep``,
``GET /health``, files, ``GET /calibration``) over the lean HTTP/1.1 transport of
``http.py``, and turns transport failures into ``ExecutorError``: a sandbox that
died is a service-side failure, never a user-code result.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import attrs
import orjson

from sidecar.contract import MAX_STATE_BYTES, TOKEN_HEADER, parse_page_ranges

from ..errors import InputsTooLarge
from ..settings import StateSettings
from .http import HttpTransport, TransportError

__all__ = ["ExecutorClient", "ExecutorError", "ExecutorResult", "OutputChunk", "StateCapture",
           "StateIssue"]

_STATE_STATUSES = ("captured", "empty", "skipped")
_JSON = {"Content-Type": "application/json"}


class ExecutorError(Exception):
    """The executor could not be reached or answered outside its contract."""


@attrs.frozen
class StateIssue:
    """A name of the Python namespace that could not be kept (or restored), and why."""

    name: str
    type: str
    error: str


@attrs.frozen
class StateCapture:
    """Ask the executor for the Python namespace after the run, under these caps."""

    on_error: bool
    max_bytes: int
    max_raw_bytes: int

    @classmethod
    def configured(cls, settings: StateSettings) -> StateCapture | None:
        """What ``STATE_*`` asks of every Python execution (None: state is off)."""
        if not settings.enabled:
            return None
        return cls(on_error=settings.capture_on_error,
                   max_bytes=min(settings.max_bytes, MAX_STATE_BYTES),
                   max_raw_bytes=settings.max_raw_bytes)


def _state_issues(data: Any) -> tuple[StateIssue, ...]:
    entries = data if isinstance(data, list) else []
    return tuple(StateIssue(name=str(e.get("name", ""))[:200], type=str(e.get("type", ""))[:200],
                            error=str(e.get("error", ""))[:500])
                 for e in entries[:1000] if isinstance(e, dict))


def _state_blob(data: Any) -> bytes | None:
    encoded = data.get("state")
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ExecutorError(f"malformed state in the executor result: {exc}") from exc


def _listing(data: Any) -> list[dict[str, Any]] | None:
    if data is None:
        return None
    if not isinstance(data, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str)
            and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)
            for entry in data):
        raise ValueError("'files' must list {name, size, sha256} entries")
    return data


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < 86400 else None


@attrs.frozen
class ExecutorResult:
    """What the executor reports for one execution."""

    exit_code: int | None
    signal: str | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    status: str
    message: str | None
    wall_time: float
    cpu_time: float
    max_rss: int
    #: Python state: the new blob (opaque), whether the capture ran (``captured``,
    #: ``empty``, ``skipped``; None when none was asked) and what could not be kept.
    state: bytes | None = attrs.field(default=None, repr=False)
    state_status: str | None = None
    state_errors: tuple[StateIssue, ...] = ()
    #: Seconds the executor reports for the state's restore and capture in the sandbox.
    state_restore_time: float | None = None
    state_capture_time: float | None = None
    #: The work dir's files after the run (``GET /files`` entries); None: not given.
    files: list[dict[str, Any]] | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Any) -> ExecutorResult:
        try:
            state_status = data.get("state_status")
            return cls(
                exit_code=data["exit_code"], signal=data["signal"], stdout=str(data["stdout"]),
                stderr=str(data["stderr"]), stdout_truncated=bool(data["stdout_truncated"]),
                stderr_truncated=bool(data["stderr_truncated"]), status=str(data["status"]),
                message=data.get("message"), wall_time=float(data["wall_time"]),
                cpu_time=float(data["cpu_time"]), max_rss=int(data["max_rss"]),
                state=_state_blob(data),
                state_status=state_status if state_status in _STATE_STATUSES else None,
                state_errors=_state_issues(data.get("state_errors")),
                state_restore_time=_seconds(data.get("state_restore_time")),
                state_capture_time=_seconds(data.get("state_capture_time")),
                files=_listing(data.get("files")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExecutorError(f"malformed executor result: {exc}") from exc


@attrs.frozen
class OutputChunk:
    """A piece of the program's output as it ran (``stdout`` or ``stderr``), decoded."""

    stream: str
    text: str


def _stream_line(line: str) -> OutputChunk | ExecutorResult | None:
    """One NDJSON line of ``/execute/stream``; None for a blank line."""
    if not line.strip():
        return None
    try:
        item = orjson.loads(line)
        if not isinstance(item, dict):
            raise TypeError("not an object")
        if "result" in item:
            return ExecutorResult.from_json(item["result"])
        if "error" in item:
            raise ExecutorError(f"executor failed: {item['error']}: {item.get('message')}")
        stream, text = item["stream"], item["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExecutorError(f"malformed executor stream line: {exc}") from exc
    if stream not in ("stdout", "stderr") or not isinstance(text, str):
        raise ExecutorError(f"malformed executor stream line: {line[:200]!r}")
    return OutputChunk(stream=stream, text=text)


def execute_body(*, lang: str, code: str, args: list[str], timeout: float, request_id: str,
                 state: bytes | None, capture: StateCapture | None, **extra: Any) -> bytes:
    """The ``/execute`` body (``extra``: more fields, e.g. a programmatic run's tools)."""
    fields: dict[str, Any] = {"lang": lang, "code": code, "args": args, "timeout": timeout,
                              "request_id": request_id, **extra}
    if state is not None:
        fields["state"] = base64.b64encode(state).decode("ascii")
    if capture is not None:
        fields.update(capture_state=True, capture_state_on_error=capture.on_error,
                      max_state_bytes=capture.max_bytes,
                      max_state_raw_bytes=capture.max_raw_bytes)
    return orjson.dumps(fields)


class ExecutorClient:
    """Talks to one executor; ``address`` is ``unix:/path`` or ``http://host:port``."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        #: The sandbox's token, sent with every request (``/health`` ignores it): the
        #: executor takes the first one it is shown and from then on serves only requests
        #: that present it (``sidecar/server.py``). A fresh sandbox gets a new one; a client of
        #: a sandbox claimed earlier (paused, kept) must be given the one it was shown.
        self.token = token or secrets.token_urlsafe(32)
        self._http = HttpTransport(address)

    def _headers(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        return {**(headers or {}), TOKEN_HEADER: self.token}

    def _json_headers(self) -> dict[str, str]:
        return self._headers(_JSON)

    async def close(self) -> None:
        await self._http.close()

    async def _fetch(self, method: str, path: str, *, body: bytes = b"",
                     headers: dict[str, str] | None = None, timeout: float = 10.0,
                     during: str = "") -> tuple[int, bytes]:
        """Status and whole body of one request; transport failures as ``ExecutorError``."""
        try:
            async with self._http.request(method, path, body=body,
                                          headers=self._headers(headers),
                                          timeout=timeout) as response:
                return response.status, await response.read()
        except TransportError as exc:
            raise ExecutorError(f"executor unreachable{during}: {exc}") from exc

    async def post_json(self, path: str, body: bytes, *, timeout: float,
                        during: str = "") -> tuple[int, bytes]:
        """Status and body of a JSON ``POST``; transport failures as ``ExecutorError``."""
        return await self._fetch("POST", path, body=body, headers=self._json_headers(),
                                 timeout=timeout, during=during)

    async def post_for_result(self, path: str, body: bytes, *, timeout: float,
                              during: str = "") -> Any:
        """The decoded JSON answer of a ``POST`` that must succeed: a status other than
        200 or a body that is not JSON is an ``ExecutorError`` (with the body's start)."""
        status, content = await self.post_json(path, body, timeout=timeout, during=during)
        if status != 200:
            raise ExecutorError(f"executor answered {status} to {path}: "
                                f"{content[:2000].decode(errors='replace')}")
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise ExecutorError(f"malformed executor result: {exc}") from exc

    async def _get_json(self, path: str, *, timeout: float = 10.0) -> tuple[int, Any]:
        """Status and decoded JSON body of ``GET path``."""
        status, content = await self._fetch("GET", path, timeout=timeout)
        try:
            return status, orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise ExecutorError(f"executor answered {status} with no JSON: "
                                f"{content[:200]!r}") from exc

    async def version(self) -> str | None:
        """The sandbox's toolchain version (the executor runs the probe once)."""
        _, body = await self._get_json("/health?version=1", timeout=35.0)
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, str) else None

    async def wait_ready(self, timeout: float,
                         alive: Callable[[], bool] | None = None) -> None:
        """Until the executor is ready: one ``/health?wait`` held open by the executor
        (retried while the sandbox is not yet answering at all, unless ``alive`` says
        the sandbox's process is gone: it never will)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.005
        while True:
            left = deadline - loop.time()
            try:
                status, body = await self._get_json(f"/health?wait={max(left, 0):.3f}",
                                                    timeout=max(left, 0) + 5.0)
            except ExecutorError:
                status, body = 0, None  # not answering yet (or a cut answer): ask again
            if status == 200:
                return
            if status == 500 and isinstance(body, dict):
                raise ExecutorError(f"executor at {self.address} failed to warm up: "
                                    f"{body.get('message')}")
            if loop.time() >= deadline:
                raise ExecutorError(f"executor at {self.address} not ready after {timeout:.0f}s")
            if alive is not None and not alive():
                raise ExecutorError(f"the sandbox exited before its executor at {self.address} "
                                    "was ready")
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.2)

    async def execute(self, *, lang: str, code: str, args: list[str], timeout: float,
                      request_id: str, transport_timeout: float, state: bytes | None = None,
                      capture: StateCapture | None = None) -> ExecutorResult:
        """Run the code; ``state`` is restored first, ``capture`` asks for it afterwards."""
        body = execute_body(lang=lang, code=code, args=args, timeout=timeout,
                            request_id=request_id, state=state, capture=capture)
        data = await self.post_for_result("/execute", body, timeout=transport_timeout,
                                          during=" during execution")
        return ExecutorResult.from_json(data)

    async def execute_stream(self, *, lang: str, code: str, args: list[str], timeout: float,
                             request_id: str, transport_timeout: float,
                             state: bytes | None = None, capture: StateCapture | None = None,
                             ) -> AsyncGenerator[OutputChunk | ExecutorResult, None]:
        """Like ``execute``, yielding output chunks as they come, then the result last.

        Leaving the iteration early (or cancelling it) closes the connection, and the
        executor then stops the program.
        """
        body = execute_body(lang=lang, code=code, args=args, timeout=timeout,
                            request_id=request_id, state=state, capture=capture)
        try:
            async with self._http.request("POST", "/execute/stream", body=body,
                                          headers=self._json_headers(),
                                          timeout=transport_timeout) as response:
                if response.status != 200:
                    raise ExecutorError(f"executor answered {response.status}: "
                                        f"{await response.text()}")
                async for line in response.iter_lines():
                    event = _stream_line(line)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, ExecutorResult):
                        return
        except TransportError as exc:
            raise ExecutorError(f"executor unreachable during execution: {exc}") from exc
        raise ExecutorError("the executor's stream ended without a result")

    async def calibration(self) -> dict[str, list[list[int]]]:
        """A calibration sandbox's pages, after its execution (``sidecar/prefault.py``)."""
        status, body = await self._get_json("/calibration")
        if status != 200 or not isinstance(body, dict):
            raise ExecutorError(f"executor answered {status} to GET /calibration: {body!r:.300}")
        try:
            return {side: parse_page_ranges(body.get(side))
                    for side in ("executor", "worker")}
        except ValueError as exc:
            raise ExecutorError(f"malformed calibration: {exc}") from exc

    async def list_files(self) -> list[dict[str, Any]]:
        """The work dir's regular files: ``{name, size, mtime, sha256}`` each."""
        status, body = await self._get_json("/files")
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("files"), list):
            raise ExecutorError(f"executor answered {status}: {str(body)[:2000]}")
        files: list[dict[str, Any]] = body["files"]
        return files

    async def put_file(self, path: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Stream a file into the work dir at ``path`` (subdirectories are created)."""
        try:
            async with self._http.request(
                    "PUT", f"/files/{quote(path, safe='/')}", stream=chunks, length=size,
                    headers=self._headers({"Content-Type": "application/octet-stream"}),
                    timeout=120) as response:
                text = await response.text()
        except TransportError as exc:
            raise ExecutorError(f"executor unreachable during stage-in: {exc}") from exc
        if response.status in (413, 507):  # over the work dir's size, or it is full
            raise InputsTooLarge(f"the inputs do not fit in the sandbox's work dir "
                                 f"(at {path!r})", detail=text[:2000])
        if response.status != 201:
            raise ExecutorError(f"stage-in of {path!r} refused ({response.status}): {text}")

    @contextlib.asynccontextmanager
    async def open_file(self, path: str) -> AsyncIterator[AsyncIterator[bytes] | None]:
        """The file's bytes as a stream, or None when it is not a regular file."""
        try:
            async with self._http.request("GET", f"/files/{quote(path, safe='/')}",
                                          headers=self._headers(), timeout=120) as response:
                if response.status == 404:
                    await response.read()
                    yield None
                    return
                if response.status != 200:
                    raise ExecutorError(f"executor answered {response.status} for "
                                        f"{path!r}: {await response.text()}")
                yield response.iter_bytes(1 << 20)
        except TransportError as exc:
            raise ExecutorError(f"executor unreachable during stage-out: {exc}") from exc

    async def _file_request(self, method: str, path: str, doing: str) -> bytes | None:
        """``method`` on one work-dir file: its answer's body, None for a 404."""
        status, content = await self._fetch(method, f"/files/{quote(path, safe='/')}")
        if status == 404:
            return None
        if status != 200:
            raise ExecutorError(f"executor answered {status}{doing}: "
                                f"{content[:2000].decode(errors='replace')}")
        return content

    async def read_file(self, name: str) -> bytes | None:
        """A file's bytes, or None when it is not a regular file of the work dir."""
        return await self._file_request("GET", name, "")

    async def keep(self) -> None:
        """Make this (fresh) sandbox a kept one: it accepts further executions, each a new
        process, ``/mnt/data`` kept between them (runtime sessions, ``sidecar/kept.py``),
        each presenting ``token`` (a later client of the sandbox needs it). The token
        is in the body too, for an executor of an older release, which reads it only
        there."""
        # On a connection of its own: an executor of an older release reads no body here,
        # and the unread token must not be taken for the connection's next request.
        status, content = await self._fetch(
            "POST", "/keep", body=orjson.dumps({"token": self.token}),
            headers={**_JSON, "Connection": "close"}, timeout=10.0, during=" asking to keep")
        if status != 200:
            raise ExecutorError(f"executor answered {status} to /keep: "
                                f"{content[:2000].decode(errors='replace')}")

    async def delete_file(self, path: str) -> bool:
        """Remove one file of the work dir (never following a link); False if absent."""
        return await self._file_request("DELETE", path, f" deleting {path!r}") is not None
