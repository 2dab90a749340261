"""Where a request ends, as the real executor reads it: one ``Content-Length`` of ASCII
digits, no ``Transfer-Encoding``; an answer given before the whole body was read closes
the connection (those bytes never run as a request of their own); a refused upload
reads its body first and keeps the connection; every refusal is JSON.

Each smuggled request below is a ``DELETE`` of ``keep.txt``: had it run, the file
would be gone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.file_routes import LINGER_BYTES
from sidecar.request_head import MAX_LENGTH_DIGITS

from .raw_http import Executor, RawClient, running_executor

CAP = 1024 * 1024  # the executor's --max-upload-bytes here
SMUGGLED = b"DELETE /files/keep.txt HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Executor]:
    with running_executor(tmp_path, "--max-upload-bytes", str(CAP)) as running:
        (running.work / "keep.txt").write_text("kept")
        yield running


def _refused_and_closed(client: RawClient, status: int, error: str) -> None:
    answer = client.answer()
    assert (answer.status, answer.body["error"]) == (status, error), answer
    assert isinstance(answer.body["message"], str) and answer.closes, answer
    assert client.at_end(), "nothing after a refusal: the connection is closed"


def _untouched(executor: Executor) -> None:
    assert (executor.work / "keep.txt").read_text() == "kept", "a smuggled request ran"
    assert sorted(path.name for path in executor.work.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("fields", [
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
    b"transfer-encoding:chunked\r\n",
])
def test_transfer_encoding_is_refused(executor: Executor, fields: bytes) -> None:
    client = executor.connect()
    client.send(b"PUT /files/te.txt HTTP/1.1\r\n" + fields + b"\r\n"
                b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
    _refused_and_closed(client, 501, "not_implemented")
    _untouched(executor)


@pytest.mark.parametrize("value", [
    b"\xb2", b"\xb9", b"1\xb3",  # superscripts (latin-1): str.isdigit says yes
    "\u0663".encode(), "\uff15".encode(),  # an Arabic-Indic and a full-width digit (UTF-8)
    b"+5", b"-1", b"0x5", b"5 5", b"5,5", b"5, 5", b"1_0", b"", b"5.0", b"5\xa0", b"\xa05",
    b"1" + b"0" * MAX_LENGTH_DIGITS,  # one digit past the cap
])
def test_a_content_length_of_anything_but_ascii_digits_is_refused(executor: Executor,
                                                                  value: bytes) -> None:
    client = executor.connect()
    client.send(b"PUT /files/cl.txt HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n"
                + b"hello" + SMUGGLED)
    _refused_and_closed(client, 400, "bad_request")
    _untouched(executor)


@pytest.mark.parametrize("lengths", [("5", "5"), ("1", "40"), ("40", "1")])
def test_a_repeated_content_length_is_refused(executor: Executor,
                                              lengths: tuple[str, str]) -> None:
    client = executor.connect()
    fields = "".join(f"Content-Length: {length}\r\n" for length in lengths)
    client.send(f"PUT /files/cl.txt HTTP/1.1\r\n{fields}\r\n".encode() + b"hello" + SMUGGLED)
    _refused_and_closed(client, 400, "bad_request")
    _untouched(executor)


def test_content_lengths_the_executor_takes(executor: Executor) -> None:
    """Leading zeros are a number; the most digits the cap allows is read as a number
    (then refused as too large, its body unread: the connection closes)."""
    client = executor.connect()
    client.send(b"PUT /files/zeros.txt HTTP/1.1\r\nContent-Length: 00005\r\n\r\nhello"
                b"GET /files/zeros.txt HTTP/1.1\r\n\r\n")
    assert client.answer().status == 201
    answer = client.answer()
    assert (answer.status, answer.body, answer.closes) == (200, b"hello", False)
    client.send(f"PUT /files/x HTTP/1.1\r\nContent-Length: {'9' * MAX_LENGTH_DIGITS}\r\n\r\n"
                .encode() + SMUGGLED)
    _refused_and_closed(client, 413, "request_entity_too_large")
    assert not (executor.work / "x").exists()


@pytest.mark.parametrize("request_head", [
    b"GET /files HTTP/1.1\r\nContent-Length: %d\r\n\r\n",  # a route that reads no body
    b"GET /files/keep.txt HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
    b"POST /nowhere HTTP/1.1\r\nContent-Length: %d\r\n\r\n",  # no such route
    b"PUT /elsewhere HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
    b"DELETE /files/absent HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
])
def test_an_answer_that_leaves_the_body_unread_closes_the_connection(
        executor: Executor, request_head: bytes) -> None:
    client = executor.connect()
    client.send(request_head % len(SMUGGLED) + SMUGGLED)
    answer = client.answer()
    assert answer.closes, answer
    assert client.at_end(), "the body was not read as a request"
    _untouched(executor)


def test_a_body_over_the_upload_cap_is_refused_unread(executor: Executor) -> None:
    """The cap on both sides: at the cap the file is written and the connection kept;
    one byte more is a 413 before any byte is read, and the connection closes."""
    client = executor.connect()
    client.send(b"PUT /files/at-cap.bin HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % CAP
                + b"a" * CAP)
    answer = client.answer()
    assert (answer.status, answer.body["size"], answer.closes) == (201, CAP, False)
    client.send(b"PUT /files/over.bin HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (CAP + 1)
                + SMUGGLED)
    _refused_and_closed(client, 413, "request_entity_too_large")
    assert not (executor.work / "over.bin").exists()
    assert (executor.work / "keep.txt").exists()


@pytest.mark.parametrize(("target", "status"), [
    ("/files/-rf", 400),                      # a name the rules refuse
    ("/files/" + "a" * 256, 400),             # too long
    ("/files/a/b/c/d/e", 400),                # too deep
    ("/files/keep.txt/inside", 409),          # a file where a directory should be
    ("/files/sub", 409),                      # a directory where the file should be
])
def test_a_refused_upload_reads_its_body_and_keeps_the_connection(
        executor: Executor, target: str, status: int) -> None:
    (executor.work / "sub").mkdir()
    body = b"x" * (256 * 1024)  # the whole of it sent before any answer is read
    client = executor.connect()
    client.send(f"PUT {target} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body + b"GET /files/keep.txt HTTP/1.1\r\n\r\n")
    answer = client.answer()
    assert answer.status == status and not answer.closes, answer
    assert set(answer.body) == {"error", "message"}
    following = client.answer()  # the same connection carries the next request
    assert (following.status, following.body) == (200, b"kept")
    assert sorted(path.name for path in executor.work.iterdir()) == ["keep.txt", "sub"]


def test_a_body_cut_short_leaves_no_file(executor: Executor) -> None:
    client = executor.connect()
    client.send(b"PUT /files/short.txt HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    client.sock.shutdown(socket.SHUT_WR)
    _refused_and_closed(client, 400, "bad_request")
    _untouched(executor)


@pytest.mark.parametrize(("data", "status", "error"), [
    (b"PATCH /files/keep.txt HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501, "not_implemented"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "request_uri_too_long"),
    (b"GET /files HTTP/1.1\r\nbad header\r\n\r\n", 400, "bad_request"),
    (b"GET /files HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
])
def test_the_standard_handlers_refusals_are_json_and_close(
        executor: Executor, data: bytes, status: int, error: str) -> None:
    client = executor.connect()
    client.send(data + SMUGGLED)
    _refused_and_closed(client, status, error)
    _untouched(executor)


@pytest.mark.parametrize("tcp", [False, True])
def test_a_refusal_is_read_by_a_client_that_sends_its_body_first(tmp_path: Path,
                                                                  tcp: bool) -> None:
    """A client that writes the whole body it declared before reading (the API's
    transport) gets its answer even when the executor refused it unread: the executor
    reads and drops up to ``LINGER_BYTES`` before closing. Closing at once would make
    the client's next writes fail (a reset, a broken pipe) before it reads a byte."""
    with running_executor(tmp_path, "--max-upload-bytes", str(CAP), tcp=tcp) as executor:
        client = executor.connect()
        client.send(b"PUT /files/big HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (CAP + 1))
        time.sleep(0.3)  # the refusal is sent meanwhile
        client.send(b"x" * (LINGER_BYTES // 2))
        _refused_and_closed(client, 413, "request_entity_too_large")
        client.close()


def test_a_client_that_never_stops_sending_is_cut_off(tmp_path: Path) -> None:
    """The other side of the linger: it ends after ``LINGER_SECONDS``, however much the
    client still sends."""
    with running_executor(tmp_path, "--max-upload-bytes", str(CAP), tcp=True) as executor:
        client = executor.connect()
        client.send(b"PUT /files/big HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
        started = time.monotonic()
        with pytest.raises(OSError):  # reset, or a broken pipe, once the executor closes
            while time.monotonic() - started < 30:  # a bound on the test, not a measure
                client.send(b"x" * 65536)
        client.close()
