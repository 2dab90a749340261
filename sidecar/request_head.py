"""Reading a request's head (request line and headers) without the ``email`` parser.

``BaseHTTPRequestHandler.parse_request`` hands the headers to ``email.parser``: in a
freshly forked sandbox that costs ~0.5 ms per request (cold code, copy-on-write pages),
more than the rest of the executor's handling of a ``print(1)``. The executor's
clients (the API, the node agent, tests) send plain HTTP/1.1 heads: a request line,
``Name: value`` lines, a blank line. They are read here line by line into the same
``http.client.HTTPMessage`` the standard handler would give, with the same limits
(65536 bytes a line, 100 headers) and the same answers to a bad head (400, 431, 505).
Standard library only.
"""

from __future__ import annotations

import http.client
from http import HTTPStatus
from typing import Protocol

__all__ = ["MAX_HEADERS", "MAX_LINE", "HeadError", "RequestHead", "read_head"]

MAX_LINE = 65536
MAX_HEADERS = 100


class HeadError(ValueError):
    """A head the executor does not serve: the status to answer and why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class RequestHead:
    """A parsed head: method, target, version, headers, and whether to keep the
    connection open after the answer."""

    __slots__ = ("headers", "keep_alive", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str,
                 headers: http.client.HTTPMessage, keep_alive: bool) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers, self.keep_alive = headers, keep_alive


def read_head(request_line: bytes, rfile: _Lines) -> RequestHead:
    """The head whose request line was already read; the headers from ``rfile``."""
    words = request_line.decode("iso-8859-1").rstrip("\r\n").split()
    if len(words) != 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({words!r})")
    method, target, version = words
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if version.startswith("HTTP/") and version[5:6].isdigit() and version[5:6] >= "2":
            raise HeadError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                            f"Invalid HTTP version ({version[5:]})")
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
    if target.startswith("//"):  # never an absolute URI without scheme (gh-87389)
        target = "/" + target.lstrip("/")
    headers = http.client.HTTPMessage()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            break
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad header line ({line[:100]!r})")
        headers[name] = value.strip()
    else:
        raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
    connection = headers.get("Connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return RequestHead(method, target, version, headers, keep_alive)
