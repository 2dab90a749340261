"""Reading a request's head (request line and headers) without the ``email`` parser.

``BaseHTTPRequestHandler.parse_request`` hands the headers to ``email.parser``: in a
freshly forked sandbox that costs ~0.5 ms per request (cold code, copy-on-write pages),
more than the rest of the executor's handling of a ``print(1)``. The executor's
clients (the API, the node agent, tests) send plain HTTP/1.1 heads: a request line,
``Name: value`` lines, a blank line. They are read here line by line into the same
``http.client.HTTPMessage`` the standard handler would give, with the same limits
(65536 bytes a line, 100 headers) and the same answers to a bad head (400, 431, 505).

The body's framing is checked here, so that no two readers of the same bytes (a proxy,
the API's transport, this executor) can disagree on where a request ends: a body is
delimited by one ``Content-Length`` of ASCII digits only. ``Transfer-Encoding`` is
refused (501, the executor reads no chunked body), and so are a repeated
``Content-Length`` or one that is not plain ASCII digits (400: ``str.isdigit`` would
take ``²`` or ``٣``, which ``int`` then refuses or reads otherwise). Standard library
only.
"""

from __future__ import annotations

import http.client
from http import HTTPStatus
from typing import Protocol

__all__ = ["MAX_HEADERS", "MAX_LENGTH_DIGITS", "MAX_LINE", "HeadError", "RequestHead",
           "read_head"]

MAX_LINE = 65536
MAX_HEADERS = 100
#: The most digits a ``Content-Length`` may have (``int`` refuses over 4300; no body
#: the executor takes comes near 10**18 bytes).
MAX_LENGTH_DIGITS = 18
_DIGITS = frozenset("0123456789")


class HeadError(ValueError):
    """A head the executor does not serve: the status to answer and why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class RequestHead:
    """A parsed head: method, target, version, headers, whether to keep the connection
    open after the answer, and the body's length (None: no ``Content-Length``, no body)."""

    __slots__ = ("content_length", "headers", "keep_alive", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str,
                 headers: http.client.HTTPMessage, keep_alive: bool, *,
                 content_length: int | None = None) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers, self.keep_alive = headers, keep_alive
        self.content_length = content_length


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
        headers[name] = value.strip(" \t\r\n")  # HTTP's whitespace only (not \xa0)
    else:
        raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
    connection = headers.get("Connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return RequestHead(method, target, version, headers, keep_alive,
                       content_length=_body_length(headers))


def _body_length(headers: http.client.HTTPMessage) -> int | None:
    """The body's length: one ``Content-Length`` of ASCII digits, or None (no body)."""
    if headers.get_all("Transfer-Encoding"):
        raise HeadError(HTTPStatus.NOT_IMPLEMENTED,
                        "Transfer-Encoding is not supported: send a Content-Length")
    lengths = headers.get_all("Content-Length") or []
    if len(lengths) > 1:
        raise HeadError(HTTPStatus.BAD_REQUEST, "more than one Content-Length")
    if not lengths:
        return None
    value = lengths[0]
    if not value or not _DIGITS.issuperset(value) or len(value) > MAX_LENGTH_DIGITS:
        raise HeadError(HTTPStatus.BAD_REQUEST,
                        f"Content-Length is not a number of ASCII digits ({value[:40]!r})")
    return int(value)
