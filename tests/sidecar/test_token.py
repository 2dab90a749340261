"""The executor serves only the API that claimed its sandbox: the first token presented
(``X-Executor-Token``) binds it, and from then on every route but ``GET /health``
refuses a request without that token (403), before it reads the body or touches a
file; the executors the API starts refuse token-less requests even before that (the
tests' others are ``--serve-unbound``). The caller here plays a neighbour that can
reach the executor (a pod's network, a cluster whose NetworkPolicy is not enforced),
against a real executor process.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.contract import TOKEN_HEADER

from .raw_http import RawClient
from .test_server import _call, ready_executor

TOKEN = "api-" + "k" * 40
ROGUE = "rogue-" + "r" * 40


@pytest.fixture
def executor(tmp_path: Path, runtime_dir: Path) -> Iterator[Path]:
    with ready_executor(tmp_path, runtime_dir) as sock:
        yield sock


def _connect(sock: Path) -> RawClient:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock))
    return RawClient(conn)


def _request(method: str, target: str, data: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return (f"{method} {target} HTTP/1.1\r\nHost: sandbox\r\n"
            f"Content-Length: {len(data)}\r\n{head}\r\n").encode() + data


def _put(sock: Path, name: str, data: bytes, headers: dict[str, str]) -> int:
    client = _connect(sock)
    try:
        client.send(_request("PUT", f"/files/{name}", data, headers))
        return client.answer().status
    finally:
        client.close()


def test_before_any_token_an_unbound_serving_executor_serves_anyone(executor: Path) -> None:
    """A ``--serve-unbound`` executor (tests, development) not bound yet answers
    requests without a token."""
    assert _call(executor, "GET", "/files") == (200, {"files": []})


def test_the_first_token_binds_the_sandbox(executor: Path, tmp_path: Path) -> None:
    api = {TOKEN_HEADER: TOKEN}
    assert _put(executor, "secret.txt", b"tenant data", api) == 201
    # Now bound: no token, another token, a malformed one are all refused.
    for headers in ({}, {TOKEN_HEADER: ROGUE}, {TOKEN_HEADER: TOKEN + "x"},
                    {TOKEN_HEADER: "short"}, {TOKEN_HEADER: ""}):
        status, body = _call(executor, "GET", "/files", headers=headers)
        assert status == 403 and "only the API that claimed it" in body["message"], body
        assert _call(executor, "GET", "/files/secret.txt", headers=headers)[0] == 403
        assert _call(executor, "DELETE", "/files/secret.txt", headers=headers)[0] == 403
        assert _call(executor, "POST", "/execute/cancel", {}, headers)[0] == 403
        assert _call(executor, "POST", "/keep", {}, headers)[0] == 403
        assert _put(executor, "planted.txt", b"x", headers) == 403
        status, body = _call(executor, "POST", "/execute",
                             {"lang": "py", "code": "print(open('secret.txt').read())"},
                             headers)
        assert status == 403, body
    assert not (tmp_path / "work" / "planted.txt").exists(), "a refused PUT wrote nothing"
    assert (tmp_path / "work" / "secret.txt").read_bytes() == b"tenant data"
    # Health stays open (probes, no data); the API goes on with its token.
    assert _call(executor, "GET", "/health")[0] == 200
    status, body = _call(executor, "POST", "/execute",
                         {"lang": "py", "code": "print(open('secret.txt').read())"}, api)
    assert (status, body["stdout"]) == (200, "tenant data\n"), body
    assert [f["name"] for f in _call(executor, "GET", "/files", headers=api)[1]["files"]] \
        == ["secret.txt"]


def test_a_malformed_first_token_binds_nothing(executor: Path) -> None:
    for bad in ("short", "x" * 257, "tab\tinside-the-token-value"):
        assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: bad})[0] == 403
    assert _call(executor, "GET", "/files")[0] == 200, "still unbound"
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: TOKEN})[0] == 200
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: ROGUE})[0] == 403


def test_a_refused_request_with_a_body_closes_its_connection(executor: Path) -> None:
    """The unread body of a refused request is never taken for a next request."""
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: TOKEN})[0] == 200
    smuggled = b"GET /files HTTP/1.1\r\nHost: sandbox\r\n\r\n"
    client = _connect(executor)
    try:
        client.send(_request("PUT", "/files/a.txt", smuggled, {TOKEN_HEADER: ROGUE}))
        answer = client.answer()
        assert answer.status == 403 and answer.closes, answer
        assert client.at_end(), "nothing answered for the body's bytes"
    finally:
        client.close()


def test_keep_s_body_token_binds_as_the_header_does(executor: Path) -> None:
    """An API of an older release sends its token only in ``/keep``'s body."""
    assert _call(executor, "POST", "/keep", {"token": TOKEN}) == (200, {"kept": True})
    assert _call(executor, "GET", "/files")[0] == 403
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: TOKEN})[0] == 200


def test_keep_with_another_token_than_the_bound_one_is_refused(executor: Path) -> None:
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: TOKEN})[0] == 200
    status, body = _call(executor, "POST", "/keep", {"token": ROGUE}, {TOKEN_HEADER: TOKEN})
    assert status == 403, body
    assert _call(executor, "GET", "/health")[1]["kept"] is False


@pytest.fixture
def required(tmp_path: Path, runtime_dir: Path) -> Iterator[Path]:
    """An executor as the API starts them (not ``--serve-unbound``)."""
    with ready_executor(tmp_path, runtime_dir, serve_unbound=False) as sock:
        yield sock


def test_a_sandbox_the_api_made_refuses_token_less_requests_even_before_its_claim(
        required: Path, tmp_path: Path) -> None:
    """The attack: a neighbour plants ``pandas.py`` in a warm sandbox's work dir before
    the API claims it, so that the next tenant's ``import pandas`` runs it. Refused; it
    can only bind the sandbox to itself, and then the API is refused in turn (its
    request fails with a 503 to try again, and the sandbox is destroyed)."""
    assert _put(required, "pandas.py", b"print('planted')", {}) == 403
    assert _call(required, "GET", "/files")[0] == 403
    assert _call(required, "POST", "/execute", {"lang": "py", "code": "print(1)"})[0] == 403
    assert not (tmp_path / "work" / "pandas.py").exists()
    assert _call(required, "GET", "/health")[0] == 200
    assert _put(required, "pandas.py", b"print('planted')", {TOKEN_HEADER: ROGUE}) == 201
    status, _ = _call(required, "POST", "/execute", {"lang": "py", "code": "print(1)"},
                      {TOKEN_HEADER: TOKEN})
    assert status == 403, "the API's token no longer binds: nothing planted runs"


def test_a_refused_request_is_not_asked_for_its_body(executor: Path) -> None:
    """``Expect: 100-continue`` is answered only once the request is admitted."""
    assert _call(executor, "GET", "/files", headers={TOKEN_HEADER: TOKEN})[0] == 200
    client = _connect(executor)
    try:
        client.send(_request("PUT", "/files/a.txt", b"", {
            TOKEN_HEADER: ROGUE, "Expect": "100-continue"}).replace(
                b"Content-Length: 0", b"Content-Length: 5"))
        answer = client.answer()
        assert answer.status == 403, answer
    finally:
        client.close()
