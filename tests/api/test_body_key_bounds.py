"""``BODY_KEY_AUTH``: the key is looked for only in the JSON body of an exec route, and
that body is read within the route's own limit; any other route's body is never read
before the caller is authenticated (an unauthenticated 400 MB upload was buffered whole
to look for a key in it)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.conftest import API_KEY, RunningApp, make_settings, serving, start_app


@pytest.fixture(scope="module")
def body_key_app(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                 valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path_factory.mktemp("body-key"), runtime_dir, valkey_url,
                             pool_sizes={}, pool_warmup_on_startup=False, body_key_auth=True)
    yield from serving(start_app(settings))


def limit_of(app: RunningApp) -> int:
    """The exec routes' body limit (MAX_CODE_SIZE plus the request's overhead)."""
    limit = app.app.request_max_body_size
    assert isinstance(limit, int) and limit > app.settings.max_code_size
    return limit


def keyed_body(size: int) -> bytes:
    """A JSON exec request with the key in it, padded with spaces to ``size`` bytes. Its
    language is unknown: authenticated, it is a 400 (401 when the key was not found)."""
    body = orjson.dumps({"lang": "no-such-language", "code": "1", "apiKey": API_KEY})
    return body + b" " * (size - len(body))


def post_json(app: RunningApp, path: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(app.base_url + path, content=body, timeout=60,
                      headers={"Content-Type": "application/json"})


@pytest.mark.attack("auth")
@pytest.mark.parametrize("path", ["/upload", "/upload/batch", "/v1/upload",
                                  f"/state/{'A' * 21}", "/health/ready"])
def test_a_body_key_is_not_looked_for_outside_the_exec_routes(body_key_app: RunningApp,
                                                              path: str) -> None:
    response = post_json(body_key_app, path, keyed_body(200))
    assert response.status_code in (401, 405), response.text  # 405: no POST route there
    if response.status_code == 401:
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["/exec", "/v1/exec", "/exec/stream", "/exec/programmatic"])
def test_a_body_key_is_accepted_on_the_exec_routes(body_key_app: RunningApp, path: str) -> None:
    response = post_json(body_key_app, path, keyed_body(200))
    # 400: authenticated (else 401), and the handler read the body the key was found in
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"


@pytest.mark.attack("auth")
def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
        body_key_app: RunningApp) -> None:
    # 400 MB declared, a few bytes sent: the answer comes without waiting for the rest
    url = urlsplit(body_key_app.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: {url.netloc}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {400 << 20}\r\n"
                     "\r\n".encode() + keyed_body(1024))
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


@pytest.mark.attack("auth")
def test_the_body_read_for_a_key_on_both_sides_of_the_exec_limit(
        body_key_app: RunningApp) -> None:
    limit = limit_of(body_key_app)

    def chunked(body: bytes) -> Iterator[bytes]:  # no Content-Length: counted as read
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    for send in (lambda body: body, chunked):
        at_limit = post_json(body_key_app, "/exec", send(keyed_body(limit)))
        assert at_limit.status_code == 400, at_limit.text
        assert "no-such-language" in at_limit.json()["message"]
        over = post_json(body_key_app, "/exec", send(keyed_body(limit + 1)))
        assert over.status_code == 413, over.text
        assert over.json()["error"] == "payload_too_large"


def rss_bytes() -> int:
    """This process's resident memory (the API server runs in it, in a thread)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines()
                    if line.startswith("VmRSS:")).split()[1]) * 1024


@pytest.mark.attack("auth")
@pytest.mark.parametrize("path,status", [("/upload", 401), ("/exec", 413)])
def test_a_large_unauthenticated_json_body_is_never_buffered(body_key_app: RunningApp,
                                                             path: str, status: int) -> None:
    before = rss_bytes()
    peak = before

    def big() -> Iterator[bytes]:  # 256 MiB of JSON, no Content-Length
        nonlocal peak
        yield b'{"lang": "bash", "code": "true", "pad": "'
        for _ in range(256):
            peak = max(peak, rss_bytes())
            yield b"x" * (1 << 20)
        yield b'"}'

    response = post_json(body_key_app, path, big())
    assert response.status_code == status, response.text
    assert peak - before < 64 << 20, f"the server grew by {(peak - before) >> 20} MiB"
