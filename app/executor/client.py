"""HTTP client for one sandbox's executor, over a unix socket or TCP.

It speaks the executor contract (``POST /execute``, ``GET /health``, files) and
turns transport failures into ``ExecutorError``: a sandbox that died is a
service-side failure, never a user-code result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import orjson

__all__ = ["ExecutorClient", "ExecutorError", "ExecutorResult"]


class ExecutorError(Exception):
    """The executor could not be reached or answered outside its contract."""


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

    @classmethod
    def from_json(cls, data: Any) -> ExecutorResult:
        try:
            return cls(
                exit_code=data["exit_code"], signal=data["signal"], stdout=str(data["stdout"]),
                stderr=str(data["stderr"]), stdout_truncated=bool(data["stdout_truncated"]),
                stderr_truncated=bool(data["stderr_truncated"]), status=str(data["status"]),
                message=data.get("message"), wall_time=float(data["wall_time"]),
                cpu_time=float(data["cpu_time"]), max_rss=int(data["max_rss"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExecutorError(f"malformed executor result: {exc}") from exc


class ExecutorClient:
    """Talks to one executor; ``address`` is ``unix:/path`` or ``http://host:port``."""

    def __init__(self, address: str) -> None:
        if address.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=address[len("unix:"):])
            base_url = "http://sandbox"
        else:
            transport = httpx.AsyncHTTPTransport()
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
                      request_id: str, transport_timeout: float) -> ExecutorResult:
        body = orjson.dumps({"lang": lang, "code": code, "args": args, "timeout": timeout,
                             "request_id": request_id})
        try:
            response = await self._http.post(
                "/execute", content=body, headers={"Content-Type": "application/json"},
                timeout=transport_timeout)
        except httpx.TransportError as exc:
            raise ExecutorError(f"executor unreachable during execution: {exc!r}") from exc
        if response.status_code != 200:
            raise ExecutorError(f"executor answered {response.status_code}: {response.text}")
        return ExecutorResult.from_json(orjson.loads(response.content))

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
