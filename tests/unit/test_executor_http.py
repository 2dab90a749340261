"""The executor hop's HTTP/1.1 transport against a real server on a unix socket.

The server is a small asyncio one written here, so each case can answer the way
it needs: keep-alive or not, chunked, cut short, never.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from app.executor.http import MAX_IDLE, HttpTransport, TransportError

Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Answers each request with ``handler(head, body, writer)``; False closes the connection."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.connections = 0
        #: Connections open now (the executor holds a thread for each).
        self.open = 0
        self.bodies: list[bytes] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                self.bodies.append(body)
                if not await self.handler(head, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


def _json(payload: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)


async def _ok(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(_json(b'{"ok": true}'))
    return True


def _run(test: Callable[[Path], Coroutine[Any, Any, None]], tmp_path: Path) -> None:
    asyncio.run(test(tmp_path / "s.sock"))


def test_keep_alive_reuses_one_connection(tmp_path: Path) -> None:
    async def test(path: Path) -> None:
        async with Server(path, _ok) as server:
            transport = HttpTransport(f"unix:{path}")
            for _ in range(3):
                async with transport.request("POST", "/x", body=b"{}") as response:
                    assert response.status == 200 and await response.read() == b'{"ok": true}'
            assert server.connections == 1
            await transport.close()

    _run(test, tmp_path)


def test_a_connection_closed_while_idle_is_replaced(tmp_path: Path) -> None:
    async def close_after(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(_json(b"{}"))  # no Connection: close, yet the server hangs up
        return False

    async def test(path: Path) -> None:
        async with Server(path, close_after) as server:
            transport = HttpTransport(f"unix:{path}")
            for _ in range(3):
                async with transport.request("GET", "/health") as response:
                    assert await response.read() == b"{}"
                await asyncio.sleep(0)  # whether or not the close is seen yet
            assert server.connections == 3 and len(server.bodies) == 3

    _run(test, tmp_path)


def test_a_post_is_never_sent_twice(tmp_path: Path) -> None:
    """A reused connection that closes once a POST (an execution) was sent may have
    delivered it: the executor could have died running it. Not resent: an error."""
    async def die_on_post(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if head.startswith(b"POST"):
            return False  # read, then the connection closes without an answer
        writer.write(_json(b"{}"))
        return True

    async def test(path: Path) -> None:
        async with Server(path, die_on_post) as server:
            transport = HttpTransport(f"unix:{path}")
            async with transport.request("GET", "/health") as response:
                assert await response.read() == b"{}"
            with pytest.raises(TransportError, match="closed before an answer"):
                async with transport.request("POST", "/execute", body=b'{"code": 1}'):
                    pass
            assert server.bodies == [b"", b'{"code": 1}'], "sent once, on the reused connection"
            await transport.close()

    _run(test, tmp_path)


def test_chunked_answers_are_read_as_lines(tmp_path: Path) -> None:
    async def chunked(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b'{"a": 1}\n{"b"', b': 2}\n', b"tail"):
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async def test(path: Path) -> None:
        async with Server(path, chunked) as server:
            transport = HttpTransport(f"unix:{path}")
            for _ in range(2):  # the connection is reusable after the last chunk
                async with transport.request("POST", "/s", body=b"{}") as response:
                    lines = [line async for line in response.iter_lines()]
                assert lines == ['{"a": 1}', '{"b": 2}', "tail"]
            assert server.connections == 1

    _run(test, tmp_path)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # cut before its length
    b"HTTP/1.1 200 OK\r\n\r\nno length",  # neither a length nor chunks
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    b"",  # closed without an answer on a fresh connection
])
def test_broken_answers_are_transport_errors(tmp_path: Path, answer: bytes) -> None:
    async def broken(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return False

    async def test(path: Path) -> None:
        async with Server(path, broken):
            transport = HttpTransport(f"unix:{path}")
            with pytest.raises(TransportError):
                async with transport.request("GET", "/files") as response:
                    await response.read()

    _run(test, tmp_path)


def test_silence_and_absence_are_transport_errors(tmp_path: Path) -> None:
    async def silent(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async def test(path: Path) -> None:
        with pytest.raises(TransportError):  # nothing listens there
            async with HttpTransport(f"unix:{path}").request("GET", "/health"):
                pass
        async with Server(path, silent):
            with pytest.raises(TransportError):
                async with HttpTransport(f"unix:{path}").request("GET", "/health",
                                                                 timeout=0.2):
                    pass

    _run(test, tmp_path)


def test_streamed_bodies_arrive_whole(tmp_path: Path) -> None:
    async def created(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        return True

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(50):
            yield bytes([index]) * 10_000

    async def test(path: Path) -> None:
        async with Server(path, created) as server:
            transport = HttpTransport(f"unix:{path}")
            async with transport.request("PUT", "/files/a", stream=chunks(),
                                         length=500_000) as response:
                assert response.status == 201 and await response.read() == b""
            assert server.bodies == [b"".join(bytes([i]) * 10_000 for i in range(50))]
            with pytest.raises(ValueError, match="length"):
                async with transport.request("PUT", "/files/b", stream=chunks()):
                    pass

    _run(test, tmp_path)


async def _created(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    return True


async def _settle(server: Server, open_at_most: int) -> None:
    """Until the server has seen its connections close (a close is seen a moment later)."""
    for _ in range(500):
        if server.open <= open_at_most:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("declared", [400_000, 600_000], ids=["longer", "shorter"])
def test_a_streamed_body_is_exactly_its_declared_length(tmp_path: Path, declared: int) -> None:
    """A source that gives more bytes than declared never gets them to the executor (they
    would be read there as a request of their own), nor does one that gives fewer leave
    it waiting: both are transport errors, and the connection is dropped."""
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(50):
            yield bytes([index]) * 10_000  # 500_000 bytes in all

    async def test(path: Path) -> None:
        async with Server(path, _created) as server:
            transport = HttpTransport(f"unix:{path}")
            with pytest.raises(TransportError, match=f"declared {declared} bytes"):
                async with transport.request("PUT", "/files/a", stream=chunks(),
                                             length=declared):
                    pass
            await _settle(server, 0)
            # At most the declared bytes arrived (all of them, when the source was longer),
            # and nothing past them was read as a request.
            assert server.open == 0 and len(server.bodies) == (1 if declared < 500_000 else 0)
            assert all(len(body) == declared for body in server.bodies)
            async with transport.request("POST", "/x", body=b"{}") as response:
                assert response.status == 201  # the next request is answered as its own
            assert server.bodies[-1] == b"{}" and server.connections == 2
            await transport.close()

    _run(test, tmp_path)


def test_streamed_requests_leave_no_connection_open(tmp_path: Path) -> None:
    """Each input of a session is streamed on a connection of its own: none is kept, so
    hundreds of inputs never hold hundreds of executor threads; and however many requests
    ran at once, at most ``MAX_IDLE`` connections are kept afterwards."""
    async def one() -> AsyncIterator[bytes]:
        yield b"x" * 100

    async def test(path: Path) -> None:
        async with Server(path, _created) as server:
            transport = HttpTransport(f"unix:{path}")
            for index in range(200):
                async with transport.request("PUT", f"/files/{index}", stream=one(),
                                             length=100) as response:
                    assert response.status == 201
            await _settle(server, 0)
            assert server.open == 0 and server.connections == 200

            async def ask() -> None:
                async with transport.request("GET", "/files") as response:
                    await response.read()

            await asyncio.gather(*(ask() for _ in range(3 * MAX_IDLE)))
            assert server.connections == 200 + 3 * MAX_IDLE
            await _settle(server, MAX_IDLE)
            assert server.open == MAX_IDLE
            await transport.close()

    _run(test, tmp_path)


def test_an_early_answer_to_a_streamed_body_is_read(tmp_path: Path) -> None:
    """An executor that refuses a file from its head (over its cap), answers and closes
    without reading the body: the answer is what the client gets, not a broken pipe."""
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        payload = b'{"error": "request_entity_too_large"}'
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        await writer.drain()
        # As the executor does (sidecar/file_routes.py): drop what is still in flight, for
        # a while, so the close is not a reset that would lose the answer.
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(5):
                while await reader.read(1 << 16):
                    pass
        writer.close()

    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 MiB: far more than the socket buffers hold
            sent += 1
            yield b"x" * (1 << 20)

    async def test(path: Path) -> None:
        server = await asyncio.start_unix_server(refuse, path=str(path))
        try:
            transport = HttpTransport(f"unix:{path}")
            async with transport.request("PUT", "/files/big", stream=chunks(),
                                         length=64 << 20) as response:
                assert response.status == 413
                assert await response.read() == b'{"error": "request_entity_too_large"}'
            assert sent < 64, "the rest of the body was not sent"
            await transport.close()
        finally:
            server.close()

    _run(test, tmp_path)


def test_only_executor_addresses_are_accepted() -> None:
    for address in ("https://pod:8080", "ftp://x", "http://no-port"):
        with pytest.raises(ValueError):
            HttpTransport(address)
