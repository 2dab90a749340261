"""A lean HTTP/1.1 client for the executor hop (a unix socket or a pod's TCP port).

Every execution crosses this hop several times, on a machine where the API and the
sandboxes share two cores: a general-purpose client (httpx: pools, anyio, h11) cost
several milliseconds per request there, more than the executor's own work for a
``print(1)``. The executor is our own server (``sidecar/server.py``), so this speaks
only what it answers: ``Content-Length`` bodies, or ``Transfer-Encoding: chunked``
for ``/execute/stream``. Connections are kept alive and reused one request at a
time (at most ``MAX_IDLE`` kept); a request that finds a reused connection closed by
the server before any byte of the answer is sent again on a new one (when its body can
be sent again). A streamed body is sent on a connection of its own, exactly its
declared length, and that connection is closed afterwards.

Transport failures (refused, reset, timed out, malformed) raise ``TransportError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MAX_IDLE", "HttpConnection", "HttpResponse", "HttpTransport", "TransportError"]

_LINE_LIMIT = 64 * 1024
_STREAM_LIMIT = 1 << 20


#: Idle connections kept per executor: each holds one of the executor's threads.
MAX_IDLE = 4


class TransportError(Exception):
    """The executor could not be reached, or its answer was cut or malformed."""


async def _read_head(reader: asyncio.StreamReader,
                     timeout: float) -> tuple[int, dict[str, str]]:
    """An answer's status and headers (lower-case names)."""
    async with asyncio.timeout(timeout):
        status_line = await reader.readuntil(b"\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise TransportError(f"malformed status line {status_line[:100]!r}")
        fields: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(parts[1]), fields


async def _send_unless_answered(writer: asyncio.StreamWriter, stream: AsyncIterator[bytes],
                                length: int, timeout: float,
                                answer: asyncio.Future[tuple[int, dict[str, str]]]) -> bool:
    """Send the streamed body, unless the answer comes first: True when it did (the
    rest is not sent; a send cut by the executor closing after it is no failure)."""
    sending = asyncio.ensure_future(_send_stream(writer, stream, length, timeout))
    either: set[asyncio.Future[Any]] = {sending, answer}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        sending.cancel()
        answer.cancel()
        raise
    if not sending.done():  # answered (or the connection ended) before the body was sent
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()  # nothing more comes: the executor's drain of it ends now
        return True
    failure = sending.exception()
    if failure is None:
        return False
    if isinstance(failure, ConnectionError):  # the executor closed: its answer may be there
        return True
    answer.cancel()  # the body itself was wrong (its length), or the send failed
    raise failure


async def _send_stream(writer: asyncio.StreamWriter, stream: AsyncIterator[bytes],
                       length: int, timeout: float) -> None:
    """Write exactly ``length`` bytes from ``stream``: a source that gives more or fewer
    is a ``TransportError`` (bytes past the declared length would reach the executor as
    a request of their own; fewer would leave it waiting), and nothing past the length
    is written."""
    sent = 0
    async for chunk in stream:
        if sent + len(chunk) > length:
            raise TransportError(f"a streamed body is longer than its declared {length} bytes")
        sent += len(chunk)
        writer.write(chunk)
        async with asyncio.timeout(timeout):
            await writer.drain()
    if sent != length:
        raise TransportError(f"a streamed body ended at {sent} of its declared {length} bytes")


class HttpConnection:
    """One open connection: its streams, and whether it can carry another request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = False

    def close(self) -> None:
        self.writer.close()


class HttpResponse:
    """Status, headers (lower-case names) and the body, read once."""

    def __init__(self, connection: HttpConnection, status: int,
                 headers: dict[str, str], timeout: float) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._timeout = timeout
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if not self._chunked and (length is None or not length.isdigit()):
            raise TransportError(f"answer without a length (status {status})")
        self._remaining = 0 if self._chunked else int(length or 0)
        self._done = not self._chunked and self._remaining == 0
        self._keep_alive = headers.get("connection", "").lower() != "close"

    @property
    def finished(self) -> bool:
        """The whole body was read (the connection may then carry another request)."""
        return self._done and self._keep_alive

    async def _read(self, size: int) -> bytes:
        reader = self._connection.reader
        try:
            async with asyncio.timeout(self._timeout):
                if not self._chunked:
                    data = await reader.read(min(size, self._remaining))
                    if not data:
                        raise TransportError("the answer ended before its Content-Length")
                    self._remaining -= len(data)
                    self._done = self._remaining == 0
                    return data
                if self._remaining == 0:
                    size_line = await reader.readuntil(b"\r\n")
                    self._remaining = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
                    if self._remaining == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers
                        self._done = True
                        return b""
                data = await reader.readexactly(min(size, self._remaining))
                self._remaining -= len(data)
                if self._remaining == 0:
                    await reader.readexactly(2)  # the chunk's CRLF
                return data
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise TransportError(f"reading the answer failed: {exc!r}") from exc

    async def iter_bytes(self, size: int = _STREAM_LIMIT) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``size`` bytes."""
        while not self._done:
            data = await self._read(size)
            if data:
                yield data

    async def iter_lines(self) -> AsyncIterator[str]:
        """The body as text lines (without their newline)."""
        pending = b""
        async for data in self.iter_bytes():
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace")
        if pending:
            yield pending.decode("utf-8", "replace")

    async def read(self) -> bytes:
        """The whole body."""
        parts = [data async for data in self.iter_bytes()]
        return b"".join(parts)

    async def text(self) -> str:
        return (await self.read()).decode("utf-8", "replace")


class HttpTransport:
    """Requests to one executor address: ``unix:/path`` or ``http://host:port``."""

    def __init__(self, address: str, connect_timeout: float = 10.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        if address.startswith("unix:"):
            self._unix: str | None = address[len("unix:"):]
            self._host, self._port = "sandbox", 0
        else:
            parts = urlsplit(address)
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                raise ValueError(f"not an executor address: {address!r}")
            self._unix, self._host, self._port = None, parts.hostname, parts.port
        self._idle: list[HttpConnection] = []

    async def _connect(self) -> HttpConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._unix is not None:
                    reader, writer = await asyncio.open_unix_connection(self._unix,
                                                                        limit=_LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_connection(self._host, self._port,
                                                                   limit=_LINE_LIMIT)
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self.address}: {exc!r}") from exc
        return HttpConnection(reader, writer)

    def _take_idle(self) -> HttpConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    @contextlib.asynccontextmanager
    async def request(self, method: str, path: str, *, body: bytes = b"",
                      stream: AsyncIterator[bytes] | None = None, length: int | None = None,
                      headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> AsyncIterator[HttpResponse]:
        """Send one request; the answer's body is read inside the ``async with``.

        ``stream`` sends the body from an iterator (``length`` bytes, required); it
        cannot be sent twice, so such a request always gets a fresh connection.
        """
        size = length if stream is not None else len(body)
        if size is None:
            raise ValueError("a streamed body needs its length")
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 pod
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {size}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        connection = self._take_idle() if stream is None else None
        response = None
        try:
            if connection is not None:
                # A reused connection that closes before the answer is sent again on a new
                # one, except a POST (an execution, a program's next step): it may have been
                # delivered (the executor could have died serving it) and must not run twice.
                response = await self._exchange(connection, head=head, body=body, stream=stream,
                                                length=size, timeout=timeout,
                                                retry=method != "POST")
            if response is None:
                connection = await self._connect()
                response = await self._exchange(connection, head=head, body=body, stream=stream,
                                                length=size, timeout=timeout, retry=False)
            assert response is not None and connection is not None
            yield response
            # A connection that carried a streamed body is not kept: each one would hold an
            # executor thread while idle (a session's hundreds of inputs, one connection
            # each, ran the sandbox out of threads), and it is closed after its answer.
            connection.reusable = response.finished and stream is None
        finally:
            if connection is not None:
                if connection.reusable and len(self._idle) < MAX_IDLE:
                    connection.reusable = False
                    self._idle.append(connection)
                else:
                    connection.close()

    async def _exchange(self, connection: HttpConnection, *, head: bytes, body: bytes,
                        stream: AsyncIterator[bytes] | None, length: int, timeout: float,
                        retry: bool) -> HttpResponse | None:
        """Send and read the answer's head; None when a reused connection was closed.

        A streamed body is sent while the answer is awaited: an executor that answers
        early (a file over its cap) and stops reading is heard, the rest not sent."""
        reader, writer = connection.reader, connection.writer
        early = False
        try:
            writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                writer.write(body)
            if stream is not None:
                answer = asyncio.ensure_future(_read_head(reader, timeout))
                early = await _send_unless_answered(writer, stream, length, timeout, answer)
                status, fields = await answer
            else:
                async with asyncio.timeout(timeout):
                    await writer.drain()
                status, fields = await _read_head(reader, timeout)
        except asyncio.IncompleteReadError as exc:
            if retry and not exc.partial:
                connection.close()  # the server closed it while idle: send on a new one
                return None
            raise TransportError(f"the connection closed before an answer: {exc!r}") from exc
        except (OSError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            if retry and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                connection.close()
                return None
            raise TransportError(f"request to {self.address} failed: {exc!r}") from exc
        if early:
            fields["connection"] = "close"  # its body was not all sent: never reused
        return HttpResponse(connection, status, fields, timeout)

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
