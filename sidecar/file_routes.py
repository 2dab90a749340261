"""The executor's plain HTTP: answering JSON, and the work-dir file routes.

``FileRoutes`` is the request handler's base (``server.py`` adds the execution
routes): one-write JSON answers and errors, a bounded body read, and the file routes
of the executor contract — ``PUT /files/{path}`` (raw, streamed, size-capped),
``POST /files`` (multipart), ``GET /files/{path}`` (regular files only, never
following a link) and ``DELETE /files/{path}``. Every path goes through ``WorkDir``'s
rules (``files.py``).
"""

from __future__ import annotations

import email.parser
import email.policy
import urllib.parse
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from .files import FileError, WorkDir
from .protocol import wire_json
from .request_head import HeadError, read_head

__all__ = ["FileRoutes"]


class _FileServer(Protocol):
    workdir: WorkDir
    max_upload_bytes: int


class FileRoutes(BaseHTTPRequestHandler):
    """JSON answers and the work-dir file routes of the executor's handler."""

    protocol_version = "HTTP/1.1"
    server: _FileServer  # type: ignore[assignment]
    raw_requestline: bytes  # set by ``handle_one_request`` (not in the stubs)

    def parse_request(self) -> bool:
        """The request's head, read by ``request_head`` (not the ``email`` parser);
        False, with the error answered, for a head the executor does not serve."""
        self.command = None  # type: ignore[assignment]  # (set in case of an error)
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if not self.requestline.strip():
            return False
        try:
            head = read_head(self.raw_requestline, self.rfile)
        except HeadError as exc:
            self.request_version = "HTTP/1.0"  # a status line, then the connection closes
            self.send_error(exc.status, str(exc))
            return False
        self.command, self.path, self.request_version = head.method, head.target, head.version
        self.headers = head.headers
        self.close_connection = not head.keep_alive
        if (self.headers.get("Expect", "").lower() == "100-continue"
                and self.request_version == "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def _send_json(self, status: int, body: Any) -> None:
        """The answer in one write, head and body together (the client wakes once), and
        logged after it is sent."""
        payload = wire_json(body)
        close = "Connection: close\r\n" if self.close_connection else ""
        head = (f"{self.protocol_version} {status} {HTTPStatus(status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"{close}\r\n")
        self.wfile.write(head.encode() + payload)
        self.log_request(status, len(payload))

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": HTTPStatus(status).phrase.lower().replace(" ", "_"),
                                 "message": message})

    def _read_body(self, limit: int) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "Content-Length required")
            return None
        if int(length) > limit:
            self._error(413, f"body larger than {limit} bytes")
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

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
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "Content-Length required")
            return
        if int(length) > self.server.max_upload_bytes:
            self._error(413, f"file larger than {self.server.max_upload_bytes} bytes")
            self.close_connection = True
            return
        try:
            size = self.server.workdir.write(relative, self._body_chunks(int(length)))
        except FileError as exc:
            self.close_connection = True  # the rest of the body was not read
            self._error(exc.status, str(exc))
            return
        self._send_json(201, {"name": relative, "size": size})

    def _body_chunks(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise FileError(400, "body ended before Content-Length")
            remaining -= len(chunk)
            yield chunk

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
