"""HTTP client for one sandbox's executor, over a unix socket or TCP.

It speaks the executor contract (``POST /execute``, ``POST /execute/stream``,
``GET /health``, files) and turns transport failures into ``ExecutorError``: a
sandbox that died is a service-side failure, never a user-code result.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import orjson

__all__ = ["ExecutorClient", "ExecutorError", "ExecutorResult", "OutputChunk", "StateCapture",
           "StateIssue"]

_STATE_STATUSES = ("captured", "empty", "skipped")


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


def _execute_body(*, lang: str, code: str, args: list[str], timeout: float, request_id: str,
                  state: bytes | None, capture: StateCapture | None) -> bytes:
    fields: dict[str, Any] = {"lang": lang, "code": code, "args": args, "timeout": timeout,
                              "request_id": request_id}
    if state is not None:
        fields["state"] = base64.b64encode(state).decode("ascii")
    if capture is not None:
        fields.update(capture_state=True, capture_state_on_error=capture.on_error,
                      max_state_bytes=capture.max_bytes,
                      max_state_raw_bytes=capture.max_raw_bytes)
    return orjson.dumps(fields)


class ExecutorClient:
    """Talks to one executor; ``address`` is ``unix:/path`` or ``http://host:port``."""

    def __init__(self, address: str) -> None:
        # Plain HTTP only (a unix socket, or a pod IP): no TLS context, which would cost
        # about 20 ms of CPU per sandbox to build (certificates loaded each time).
        if address.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=address[len("unix:"):], verify=False)
            base_url = "http://sandbox"
        else:
            transport = httpx.AsyncHTTPTransport(verify=False)
            base_url = address
        self.address = address
        self._http = httpx.AsyncClient(transport=transport, base_url=base_url,
                                       timeout=httpx.Timeout(10.0))

    async def close(self) -> None:
        await self._http.aclose()

    async def is_ready(self) -> bool:
        """True once the executor answers ``/health`` as ready (warm libraries loaded)."""
        try:
            response = await self._http.get("/health", timeout=2.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def version(self) -> str | None:
        """The sandbox's toolchain version (the executor runs the probe once)."""
        try:
            response = await self._http.get("/health", params={"version": "1"}, timeout=35.0)
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable: {exc!r}") from exc
        version = orjson.loads(response.content).get("version")
        return version if isinstance(version, str) else None

    async def wait_ready(self, timeout: float, interval: float = 0.01) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.is_ready():
            if loop.time() >= deadline:
                raise ExecutorError(f"executor at {self.address} not ready after {timeout:.0f}s")
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.2)

    async def execute(self, *, lang: str, code: str, args: list[str], timeout: float,
                      request_id: str, transport_timeout: float, state: bytes | None = None,
                      capture: StateCapture | None = None) -> ExecutorResult:
        """Run the code; ``state`` is restored first, ``capture`` asks for it afterwards."""
        body = _execute_body(lang=lang, code=code, args=args, timeout=timeout,
                             request_id=request_id, state=state, capture=capture)
        try:
            response = await self._http.post(
                "/execute", content=body, headers={"Content-Type": "application/json"},
                timeout=transport_timeout)
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable during execution: {exc!r}") from exc
        if response.status_code != 200:
            raise ExecutorError(f"executor answered {response.status_code}: {response.text}")
        return ExecutorResult.from_json(orjson.loads(response.content))

    async def execute_stream(self, *, lang: str, code: str, args: list[str], timeout: float,
                             request_id: str, transport_timeout: float,
                             state: bytes | None = None, capture: StateCapture | None = None,
                             ) -> AsyncGenerator[OutputChunk | ExecutorResult, None]:
        """Like ``execute``, yielding output chunks as they come, then the result last.

        Leaving the iteration early (or cancelling it) closes the connection, and the
        executor then stops the program.
        """
        body = _execute_body(lang=lang, code=code, args=args, timeout=timeout,
                             request_id=request_id, state=state, capture=capture)
        try:
            async with self._http.stream(
                    "POST", "/execute/stream", content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=transport_timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise ExecutorError(f"executor answered {response.status_code}: "
                                        f"{response.text}")
                async for line in response.aiter_lines():
                    event = _stream_line(line)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, ExecutorResult):
                        return
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable during execution: {exc!r}") from exc
        raise ExecutorError("the executor's stream ended without a result")

    async def list_files(self) -> list[dict[str, Any]]:
        """The work dir's regular files: ``{name, size, mtime, sha256}`` each."""
        try:
            response = await self._http.get("/files")
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise ExecutorError(f"executor answered {response.status_code}: {response.text}")
        files: list[dict[str, Any]] = orjson.loads(response.content)["files"]
        return files

    async def put_file(self, path: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Stream a file into the work dir at ``path`` (subdirectories are created)."""
        try:
            response = await self._http.put(
                f"/files/{quote(path, safe='/')}", content=chunks,
                headers={"Content-Length": str(size),
                         "Content-Type": "application/octet-stream"}, timeout=120)
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable during stage-in: {exc!r}") from exc
        if response.status_code != 201:
            raise ExecutorError(f"stage-in of {path!r} refused ({response.status_code}): "
                                f"{response.text}")

    @contextlib.asynccontextmanager
    async def open_file(self, path: str) -> AsyncIterator[AsyncIterator[bytes] | None]:
        """The file's bytes as a stream, or None when it is not a regular file."""
        try:
            async with self._http.stream("GET", f"/files/{quote(path, safe='/')}",
                                         timeout=120) as response:
                if response.status_code == 404:
                    yield None
                    return
                if response.status_code != 200:
                    await response.aread()
                    raise ExecutorError(f"executor answered {response.status_code} for "
                                        f"{path!r}: {response.text}")
                yield response.aiter_bytes(1 << 20)
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable during stage-out: {exc!r}") from exc

    async def read_file(self, name: str) -> bytes | None:
        """A file's bytes, or None when it is not a regular file of the work dir."""
        try:
            response = await self._http.get(f"/files/{quote(name, safe='/')}")
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable: {exc!r}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ExecutorError(f"executor answered {response.status_code}: {response.text}")
        return response.content
