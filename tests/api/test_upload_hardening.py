"""Uploads against malformed and hostile multipart bodies, over real HTTP, each limit
on both sides: the part's Content-Type (checked on the way in and on the way out), the
boundary's length, the preamble before the first part, the epilogue after the last (never
read), a body cut anywhere, the tenant's storage quota (413 ``quota_exceeded``) and the
upload's ``entity_id`` (the rule of ``/exec``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
from python_multipart.multipart import MAX_BOUNDARY_LENGTH

from app.domain.files.multipart import MAX_PREAMBLE
from app.settings import TenantLimits, TenantSettings
from tests.conftest import API_KEY, RunningApp, make_settings, serving, start_app

B = "h4rdening-b0undary"
FILE_HEAD = b'Content-Disposition: form-data; name="file"; filename="a.txt"'


def part(head: bytes, data: bytes, boundary: str = B) -> bytes:
    return b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"


def closing(boundary: str = B) -> bytes:
    return b"--" + boundary.encode() + b"--\r\n"


def form(*parts: bytes, boundary: str = B) -> bytes:
    return b"".join(parts) + closing(boundary)


def post(client: httpx.Client, body: bytes | Iterator[bytes], path: str = "/upload",
         boundary: str = B) -> httpx.Response:
    return client.post(path, content=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})


def tmp_files(api: RunningApp) -> list[str]:
    return sorted(p.name for p in (api.settings.data_dir / "tmp").iterdir())


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


# -- the part's Content-Type ------------------------------------------------------------

@pytest.mark.attack("protocol")
@pytest.mark.parametrize("declared", [
    b"text/plain\nX-Injected: yes", b"text/pl\x01ain", b"text/plain\x7f", b"text",
    b"text/", b"/plain", b"text/pl ain", b"text/pl\xc3\xa1in", b"text/plain/x", b"te(x)t/plain"])
def test_an_invalid_part_content_type_is_replaced_by_the_guess(client: httpx.Client,
                                                               declared: bytes) -> None:
    response = post(client, form(part(FILE_HEAD + b"\r\nContent-Type: " + declared, b"hello")))
    assert response.status_code == 200, response.text
    session, file_id = response.json()["session_id"], response.json()["files"][0]["fileId"]
    download = client.get(f"/download/{session}/{file_id}")
    assert download.status_code == 200 and download.content == b"hello"
    assert download.headers["content-type"].startswith("text/plain")  # guessed from a.txt
    assert "x-injected" not in download.headers
    listed = client.get(f"/files/{session}", params={"detail": "normalized"}).json()
    assert listed[0]["contentType"] == "text/plain"


@pytest.mark.parametrize("declared,stored", [
    (b"text/csv", "text/csv"), (b"Text/CSV; charset=utf-8", "text/csv"),
    (b"application/vnd.ms-excel", "application/vnd.ms-excel"),
    (b"image/svg+xml ; x=\x01", "image/svg+xml"),  # parameters are dropped, whatever they hold
    (b"application/octet-stream", "text/plain")])  # the generic type: the guess from the name
def test_a_valid_part_content_type_is_kept_without_parameters(client: httpx.Client,
                                                              declared: bytes,
                                                              stored: str) -> None:
    response = post(client, form(part(FILE_HEAD + b"\r\nContent-Type: " + declared, b"x")))
    assert response.status_code == 200, response.text
    session, file_id = response.json()["session_id"], response.json()["files"][0]["fileId"]
    listed = client.get(f"/files/{session}", params={"detail": "full"}).json()[0]
    assert listed["contentType"] == listed["metadata"]["content-type"] == stored
    download = client.get(f"/download/{session}/{file_id}")
    assert download.headers["content-type"].split(";")[0] == stored


@pytest.mark.attack("protocol")
def test_a_file_stored_with_a_bad_content_type_still_downloads(api: RunningApp,
                                                               client: httpx.Client) -> None:
    # stored before part types were checked: the metadata holds the raw header value
    response = post(client, form(part(b'Content-Disposition: form-data; name="file"; '
                                      b'filename="old.csv"', b"a,b\n")))
    session, file_id = response.json()["session_id"], response.json()["files"][0]["fileId"]
    objects = api.app.state.file_service.objects
    meta = api.run(objects.get_meta("default", session, file_id))
    api.run(objects.update_meta(attrs.evolve(meta, content_type="text/plain\nX-Injected: yes")))
    assert api.run(objects.get_meta("default", session, file_id)).content_type.endswith("yes")
    download = client.get(f"/download/{session}/{file_id}")
    assert download.status_code == 200 and download.content == b"a,b\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert "x-injected" not in download.headers
    listed = client.get(f"/files/{session}", params={"detail": "full"}).json()[0]
    assert listed["contentType"] == listed["metadata"]["content-type"] == "text/csv"


# -- the boundary, the preamble, the epilogue, a body cut short ---------------------------

@pytest.mark.attack("protocol")
def test_the_boundary_length_on_both_sides_of_its_limit(client: httpx.Client) -> None:
    longest = "b" * MAX_BOUNDARY_LENGTH
    ok = post(client, form(part(FILE_HEAD, b"x", longest), boundary=longest), boundary=longest)
    assert ok.status_code == 200, ok.text
    for length in (MAX_BOUNDARY_LENGTH + 1, 300):
        boundary = "b" * length
        refused = post(client, form(part(FILE_HEAD, b"x", boundary), boundary=boundary),
                       boundary=boundary)
        assert refused.status_code == 400, refused.text
        assert "boundary" in refused.json()["message"]


@pytest.mark.attack("protocol")
def test_the_preamble_on_both_sides_of_its_limit(api: RunningApp, client: httpx.Client) -> None:
    at_limit = post(client, b"\r\n" * (MAX_PREAMBLE // 2) + form(part(FILE_HEAD, b"x")))
    assert at_limit.status_code == 200, at_limit.text
    over = post(client, b"\r\n" * (MAX_PREAMBLE // 2) + b"\r" + form(part(FILE_HEAD, b"x")))
    assert over.status_code == 400 and "first 1024 bytes" in over.json()["message"]

    def endless_blank_lines() -> Iterator[bytes]:
        for _ in range(32):
            yield b"\r\n" * (1 << 19)  # 32 MiB of what the parser would skip
        yield form(part(FILE_HEAD, b"x"))

    assert post(client, endless_blank_lines()).status_code == 400
    assert tmp_files(api) == []


@pytest.mark.attack("protocol")
def test_reading_stops_at_the_closing_boundary(api: RunningApp) -> None:
    # A body that goes on after its closing boundary and never ends: the upload is
    # answered (and its temporary files removed) without waiting for the rest.
    url = urlsplit(api.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: {url.netloc}\r\nX-API-Key: {API_KEY}\r\n"
                     f"Content-Type: multipart/form-data; boundary={B}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())

        def chunk(data: bytes) -> None:
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

        chunk(part(FILE_HEAD, b"h" * 100_000))
        chunk(closing())
        chunk(b"epilogue " * 100)  # and no last chunk: the body stays open
        status, _, body = read_answer(sock)
        assert status == 200, body
        deadline = time.monotonic() + 5
        while tmp_files(api) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tmp_files(api) == [], "nothing is held while the client trickles on"


def test_an_epilogue_is_ignored(client: httpx.Client) -> None:
    for epilogue in (b"", b"\r\n", b"trailing words\r\n" * 1000, b"E" * (8 << 20)):
        response = post(client, form(part(FILE_HEAD, b"kept")) + epilogue)
        assert response.status_code == 200, response.text
        assert response.json()["files"][0]["size"] == 4


FIELD = part(b'Content-Disposition: form-data; name="read_only"', b"true")


@pytest.mark.attack("protocol")
@pytest.mark.parametrize("body", [
    b"",
    part(FILE_HEAD, b"DATA"),  # every part complete, no closing boundary
    part(FILE_HEAD, b"DATA") + b"--" + B.encode(),  # cut inside the closing boundary
    part(FILE_HEAD, b"DATA") + b"--" + B.encode() + b"-",
    part(FILE_HEAD, b"DATA") + b"--" + B.encode() + b'\r\nContent-Disposition: form-da',
    part(FILE_HEAD, b"DATA") + FIELD[:-4],  # inside a later field's value ("tr")
    part(FILE_HEAD, b"DATA") + FIELD[:30],  # inside a later part's headers
    part(FILE_HEAD, b"DATA")[:-3],  # inside the file's data ("DAT")
], ids=["empty", "no-closing", "boundary", "boundary-dash", "headers", "field", "field-head",
        "file"])
def test_a_body_cut_anywhere_is_refused(api: RunningApp, client: httpx.Client,
                                        body: bytes) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.text
    assert "malformed multipart body" in response.json()["message"]
    assert tmp_files(api) == []


def test_the_same_body_complete_is_stored(client: httpx.Client) -> None:
    response = post(client, form(part(FILE_HEAD, b"DATA"), FIELD))
    assert response.status_code == 200, response.text
    session = response.json()["session_id"]
    listed = client.get(f"/files/{session}", params={"detail": "normalized"}).json()
    assert listed[0]["read_only"] is True, "the field after the file was read"


# -- the storage quota -----------------------------------------------------------------

QUOTA_KEY = "upload-quota-key-0123456789"


@pytest.fixture(scope="module")
def quota_app(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
              valkey_url: str) -> Iterator[RunningApp]:
    """A tenant with 1000 bytes of storage (its own Valkey database: own counters)."""
    tenants = TenantSettings(
        defaults=TenantLimits(0, 0, 0, 0, 0),
        overrides={"upq": TenantLimits(executions_per_window=0, concurrent_executions=0,
                                       storage_bytes=1000, files=0, max_timeout=0)},
        auth_failures_per_window=0)
    settings = make_settings(tmp_path_factory.mktemp("quota"), runtime_dir,
                             valkey_url.rsplit("/", 1)[0] + "/9", pool_sizes={},
                             pool_warmup_on_startup=False, tenants=tenants,
                             api_keys=(API_KEY, f"upq:{QUOTA_KEY}"))
    yield from serving(start_app(settings))


def _files(*named: tuple[str, int]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, b"q" * size, "application/octet-stream")) for name, size in named]


def test_a_full_quota_is_a_413_on_upload_and_per_file_on_batch(quota_app: RunningApp) -> None:
    with quota_app.client(key=QUOTA_KEY) as client:
        first = client.post("/upload", files=_files(("a.bin", 600)))
        assert first.status_code == 200, first.text
        # all or nothing: the second part is over the quota, so the first is not kept
        over = client.post("/upload", files=_files(("b1.bin", 100), ("b2.bin", 301)))
        assert over.status_code == 413, over.text
        assert over.json()["error"] == "quota_exceeded"
        assert "'b2.bin'" in over.json()["message"] and "quota" in over.json()["message"]
        exact = client.post("/upload", files=_files(("c.bin", 400)))
        assert exact.status_code == 200, "exactly at the quota (b1.bin was given back)"
        # the batch shape: each file reports itself; all failed is a 400 (the contract)
        batch = client.post("/upload/batch", files=_files(("d.bin", 1)))
        assert batch.status_code == 400 and batch.json()["message"] == "error"
        assert batch.json()["files"][0]["status"] == "error"
        assert "quota" in batch.json()["files"][0]["error"]
        session, file_id = first.json()["session_id"], first.json()["files"][0]["fileId"]
        assert client.delete(f"/files/{session}/{file_id}").status_code == 200
        partial = client.post("/upload/batch", files=_files(("e.bin", 600), ("f.bin", 1)))
        assert partial.status_code == 200 and partial.json()["message"] == "partial_success"
        assert [f["status"] for f in partial.json()["files"]] == ["success", "error"]


# -- entity_id -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/upload", "/upload/batch"])
def test_the_upload_entity_id_follows_the_exec_rule(client: httpx.Client, path: str) -> None:
    def upload(entity_id: str) -> httpx.Response:
        return client.post(path, data={"entity_id": entity_id},
                           files={"file": ("e.txt", b"e", "text/plain")})

    for good in ("a" * 40, "Agent_1-x", ""):  # empty: no entity_id
        assert upload(good).status_code == 200, good
    for bad in ("a" * 41, "has spaces!", "dot.ted", "ünï", "a/b"):
        refused = upload(bad)
        assert refused.status_code == 400, bad
        assert "entity_id must be 1-40 characters" in refused.json()["message"]
    # the same entity_id finds the same session again, as on /exec
    first, again = upload("agent-7"), upload("agent-7")
    assert first.json()["session_id"] == again.json()["session_id"]
