"""The executor's request-head reader (``sidecar/request_head.py``): what the standard
handler would parse, the same limits on both sides, the same refusals."""

from __future__ import annotations

import io
from http import HTTPStatus

import pytest

from sidecar.request_head import (
    MAX_HEADERS,
    MAX_LENGTH_DIGITS,
    MAX_LINE,
    HeadError,
    RequestHead,
    read_head,
)


def _read(line: bytes, rest: bytes) -> RequestHead:
    return read_head(line, io.BytesIO(rest))


def test_a_request_the_api_sends() -> None:
    head = _read(b"POST /execute HTTP/1.1\r\n",
                 b"Host: sandbox\r\nContent-Type: application/json\r\n"
                 b"content-length: 12\r\n\r\n{\"lang\":1}")
    assert (head.method, head.target, head.version) == ("POST", "/execute", "HTTP/1.1")
    assert head.headers.get("Content-Length") == "12"  # names are case-insensitive
    assert head.headers.get("Content-Type") == "application/json"
    assert head.keep_alive


@pytest.mark.parametrize(("version", "connection", "keep_alive"), [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Close", False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "keep-alive", True),
])
def test_keep_alive_as_http_says(version: str, connection: str | None, keep_alive: bool) -> None:
    headers = f"Connection: {connection}\r\n\r\n" if connection else "\r\n"
    head = _read(f"GET /health {version}\r\n".encode(), headers.encode())
    assert head.keep_alive is keep_alive


def test_a_double_slash_target_is_one_path() -> None:
    assert _read(b"GET //files//x HTTP/1.1\r\n", b"\r\n").target == "/files//x"


def test_the_line_limit_on_both_sides() -> None:
    name = b"X-Long: "
    fits = name + b"a" * (MAX_LINE - len(name) - 2) + b"\r\n"
    assert len(fits) == MAX_LINE
    assert _read(b"GET / HTTP/1.1\r\n", fits + b"\r\n").headers.get("X-Long")
    with pytest.raises(HeadError) as refused:
        _read(b"GET / HTTP/1.1\r\n", name + b"a" * MAX_LINE + b"\r\n\r\n")
    assert refused.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_the_header_count_on_both_sides() -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    assert len(_read(b"GET / HTTP/1.1\r\n", lines + b"\r\n").headers) == MAX_HEADERS
    with pytest.raises(HeadError) as refused:
        _read(b"GET / HTTP/1.1\r\n", lines + b"X-one-more: v\r\n\r\n")
    assert refused.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


@pytest.mark.parametrize(("line", "status"), [
    (b"GET /\r\n", HTTPStatus.BAD_REQUEST),  # HTTP/0.9
    (b"GET / HTTP/1.1 extra\r\n", HTTPStatus.BAD_REQUEST),
    (b"GET / HTTX/1.1\r\n", HTTPStatus.BAD_REQUEST),
    (b"GET / HTTP/1.x\r\n", HTTPStatus.BAD_REQUEST),
    (b"GET / HTTP/2.0\r\n", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
])
def test_bad_request_lines(line: bytes, status: HTTPStatus) -> None:
    with pytest.raises(HeadError) as refused:
        _read(line, b"\r\n")
    assert refused.value.status == status


@pytest.mark.parametrize("header", [b"no colon here\r\n", b": no name\r\n",
                                    b"Space before : colon\r\n", b" folded: line\r\n"])
def test_bad_header_lines(header: bytes) -> None:
    with pytest.raises(HeadError) as refused:
        _read(b"GET / HTTP/1.1\r\n", header + b"\r\n")
    assert refused.value.status == HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(("fields", "length"), [
    (b"", None), (b"Content-Length: 0\r\n", 0), (b"content-length: 12\r\n", 12),
    (b"Content-Length:  007 \t\r\n", 7),  # leading zeros; HTTP's whitespace around
    (b"Content-Length: " + b"9" * MAX_LENGTH_DIGITS + b"\r\n", 10**MAX_LENGTH_DIGITS - 1),
])
def test_the_body_length_is_one_number_of_ascii_digits(fields: bytes,
                                                       length: int | None) -> None:
    assert _read(b"PUT /files/a HTTP/1.1\r\n", fields + b"\r\n").content_length == length


@pytest.mark.parametrize("fields", [
    b"Content-Length: \xb2\r\n", b"Content-Length: 1\xb9\r\n",  # isdigit() says yes
    "Content-Length: \u0663\r\n".encode(), b"Content-Length: +1\r\n",
    b"Content-Length: -1\r\n", b"Content-Length: 1 1\r\n", b"Content-Length: 1,1\r\n",
    b"Content-Length: \r\n", b"Content-Length: 1\xa0\r\n", b"Content-Length: 0x1\r\n",
    b"Content-Length: 1" + b"0" * MAX_LENGTH_DIGITS + b"\r\n",  # one digit too many
    b"Content-Length: 1\r\nContent-Length: 1\r\n",  # repeated, even the same
    b"Content-Length: 1\r\ncontent-length: 9\r\n",
])
def test_any_other_content_length_is_a_400(fields: bytes) -> None:
    with pytest.raises(HeadError) as refused:
        _read(b"PUT /files/a HTTP/1.1\r\n", fields + b"\r\n")
    assert refused.value.status == HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize("fields", [
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"transfer-encoding: identity\r\n", b"Transfer-Encoding: \r\n",
])
def test_a_transfer_encoding_is_a_501(fields: bytes) -> None:
    with pytest.raises(HeadError) as refused:
        _read(b"POST /execute HTTP/1.1\r\n", fields + b"\r\n")
    assert refused.value.status == HTTPStatus.NOT_IMPLEMENTED
