"""The executor's plain HTTP: answering JSON, and the work-dir file routes.

``FileRoutes`` is the request handler's base (``server.py`` adds the execution
routes): one-write JSON answers and errors, a bounded body read, and the file routes
of the executor contract — ``PUT /files/{path}`` (raw, streamed, size-capped),
``POST /files`` (multipart), ``GET /files/{path}`` (regular files only, never
following a link) and ``DELETE /files/{path}``. Every path goes through ``WorkDir``'s
rules (``files.py``).

Every answer is JSON, the refusals of the standard handler included (``send_error``):
``{"error": <the status's phrase in snake case>, "message": ...}``. A request's body
is read exactly to its ``Content-Length`` (``request_head`` refused any other
framing); an answer given while part of it is unread (a refusal before the body, a
body a route does not take) closes the connection, since those bytes would otherwise
be read as the next request, and the executor lingers a moment reading and dropping
what the client still sends, so that the close does not reset the connection before
the answer is read. A refused ``PUT /files/{path}`` (a bad name, a name conflict, no
space left) first reads and drops the rest of its body, at most the upload cap the
route already checked: a client that sends its whole body before reading (the API's
transport) reads the answer, and the connection stays usable.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import socket
import time
import urllib.parse
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from .files import FileError, WorkDir
from .protocol import wire_json
from .request_head import HeadError, read_head

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "FileRoutes"]

#: After an answer that closes the connection with part of the request unread: how long,
#: and how many bytes at most, the executor reads and drops what the client still sends.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
_CHUNK = 1 << 20


class _FileServer(Protocol):
    workdir: WorkDir
    max_upload_bytes: int


class FileRoutes(BaseHTTPRequestHandler):
    """JSON answers and the work-dir file routes of the executor's handler."""

    protocol_version = "HTTP/1.1"
    server: _FileServer  # type: ignore[assignment]
    raw_requestline: bytes  # set by ``handle_one_request`` (not in the stubs)

    #: The request body's declared length (None: no ``Content-Length``, no body).
    content_length: int | None = None
    #: How much of it is not read yet.
    _unread = 0
    #: Whether to linger before the connection closes (``finish``).
    _linger = False

    def parse_request(self) -> bool:
        """The request's head, read by ``request_head`` (not the ``email`` parser);
        False, with the error answered, for a head the executor does not serve."""
        self.command = None  # type: ignore[assignment]  # (set in case of an error)
        self.request_version = self.default_request_version
        self.close_connection = True
        self.content_length, self._unread = None, 0
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if not self.requestline.strip():
            return False
        try:
            head = read_head(self.raw_requestline, self.rfile)
        except HeadError as exc:
            self.send_error(exc.status, str(exc))
            return False
        self.command, self.path, self.request_version = head.method, head.target, head.version
        self.headers = head.headers
        self.close_connection = not head.keep_alive
        self.content_length = head.content_length
        self._unread = head.content_length or 0
        if not self._admitted():
            return False
        if (self.headers.get("Expect", "").lower() == "100-continue"
                and self.request_version == "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def _admitted(self) -> bool:
        """Whether this request may go on (else it is answered): the server's gate."""
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """A refusal of the standard handler (a bad head, a request line too long, a
        method without routes) as the JSON error of the other answers; the connection
        closes after it, since where the request ends is not known."""
        self.close_connection = True
        self._linger = True
        self._error(code, message or HTTPStatus(code).phrase)

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line and the standard headers of an answer sent in parts (a file,
        a stream), and ``Connection: close`` when it closes the connection."""
        super().send_response(code, message)
        if self._closes():
            self.send_header("Connection", "close")

    def _closes(self) -> bool:
        """Whether the connection closes after the answer about to be sent: asked for, or
        part of the request body unread (those bytes would be read as a request)."""
        if self._unread:
            self.close_connection = True
            self._linger = True
        return self.close_connection

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._linger_before_close()

    def _linger_before_close(self) -> None:
        """Our side shut down, read and drop what the client still sends, up to its end,
        ``LINGER_BYTES`` or ``LINGER_SECONDS``: a socket closed with unread bytes resets
        the connection, which can destroy the answer before the client read it."""
        with contextlib.suppress(OSError):  # the client already went: nothing to wait for
            self.connection.shutdown(socket.SHUT_WR)
        deadline, dropped = time.monotonic() + LINGER_SECONDS, 0
        try:
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                data = self.connection.recv(65536)
                if not data:
                    return
                dropped += len(data)
        except (TimeoutError, ConnectionError):
            return  # the client still sends, or reset: the connection closes now

    def _send_json(self, status: int, body: Any) -> None:
        """The answer in one write, head and body together (the client wakes once), and
        logged after it is sent."""
        payload = wire_json(body)
        close = "Connection: close\r\n" if self._closes() else ""
        head = (f"{self.protocol_version} {status} {HTTPStatus(status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"{close}\r\n")
        self.wfile.write(head.encode() + payload)
        self.log_request(status, len(payload))

    def _error(self, status: int, message: str) -> None:
        phrase = HTTPStatus(status).phrase.lower()  # "Request-URI Too Long": request_uri_...
        self._send_json(status, {"error": "".join(ch if ch.isalnum() else "_" for ch in phrase),
                                 "message": message})

    def _read_body(self, limit: int) -> bytes | None:
        """The whole body, at most ``limit`` bytes; None once a refusal is answered."""
        length = self.content_length
        if length is None:
            self._error(411, "Content-Length required")
            return None
        if length > limit:
            self._error(413, f"body larger than {limit} bytes")
            return None
        body = self.rfile.read(length)
        self._unread -= len(body)
        if self._unread:
            self._error(400, "body ended before its Content-Length")
            return None
        return body

    def _body_chunks(self) -> Iterator[bytes]:
        """The rest of the body, in pieces; a ``FileError`` if it ends before its length."""
        while self._unread > 0:
            chunk = self.rfile.read(min(self._unread, _CHUNK))
            if not chunk:
                raise FileError(400, "body ended before its Content-Length")
            self._unread -= len(chunk)
            yield chunk

    def _discard_body(self) -> None:
        """Read and drop the rest of the body (the route checked its length first)."""
        with contextlib.suppress(FileError):  # ended early: the answer closes the connection
            for _ in self._body_chunks():
                pass

    def do_DELETE(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/files/"):
            self._error(404, "no such route")
            return
        try:
            self.server.workdir.remove(urllib.parse.unquote(path[len("/files/"):]))
        except FileError as exc:
            self._error(exc.status, str(exc))
            return
        self._send_json(200, {"removed": True})

    def do_PUT(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/files/"):
            self._error(404, "no such route")
            return
        relative = urllib.parse.unquote(path[len("/files/"):])
        if self.content_length is None:
            self._error(411, "Content-Length required")
            return
        if self.content_length > self.server.max_upload_bytes:
            self._error(413, f"file larger than {self.server.max_upload_bytes} bytes")
            return
        try:
            size = self.server.workdir.write(relative, self._body_chunks())
        except FileError as exc:  # the partial file is removed (``WorkDir.write``)
            self._discard_body()
            self._error(exc.status, str(exc))
            return
        self._send_json(201, {"name": relative, "size": size})

    def _upload(self) -> None:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            self._error(415, "expected multipart/form-data")
            return
        body = self._read_body(self.server.max_upload_bytes)
        if body is None:
            return
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        written = []
        try:
            for part in message.iter_parts():
                name = part.get_filename()
                if name is None:
                    continue
                data = part.get_payload(decode=True)
                payload = data if isinstance(data, bytes) else b""
                size = self.server.workdir.write(name, iter((payload,)))
                written.append({"name": name, "size": size})
        except FileError as exc:
            self._error(exc.status, str(exc))
            return
        self._send_json(201, {"files": written})

    def _send_file(self, relative: str) -> None:
        try:
            fd, size = self.server.workdir.open_regular(relative)
        except FileError as exc:
            self._error(exc.status, str(exc))
            return
        with open(fd, "rb") as handle:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            remaining = size
            while remaining > 0:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break  # the file shrank after fstat: the length promise cannot be kept
                self.wfile.write(chunk)
                remaining -= len(chunk)
            if remaining:
                self.close_connection = True
