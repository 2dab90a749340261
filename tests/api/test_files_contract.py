"""File endpoints at their limits and with bad input: clear errors, nothing lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.backends.local import LocalBackend
from tests.conftest import OTHER_KEY, RunningApp

MIB = 1024 * 1024


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/upload", files={"file": (name, data, "application/octet-stream")})


def stored_id(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    return body["session_id"], body["files"][0]["fileId"]


def tmp_files(api: RunningApp) -> list[str]:
    return sorted(p.name for p in (api.settings.data_dir / "tmp").iterdir())


@pytest.mark.attack("files")
def test_upload_size_limit_on_both_sides(client: httpx.Client, api: RunningApp) -> None:
    at_limit = upload(client, "exact.bin", b"x" * MIB)
    assert at_limit.status_code == 200
    session, file_id = stored_id(at_limit)
    assert client.get(f"/sessions/{session}/objects/{file_id}").json()["size"] == MIB
    over = upload(client, "over.bin", b"x" * (MIB + 1))
    assert over.status_code == 413
    assert over.json()["error"] == "payload_too_large"
    assert tmp_files(api) == [], "nothing half-written is left behind"


@pytest.mark.attack("files")
def test_endless_upload_is_cut_while_streaming(client: httpx.Client, api: RunningApp) -> None:
    boundary = "endless-boundary"
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"endless.bin\"\r\n\r\n").encode()
        for _ in range(100_000):  # ~6 GB if nobody stopped it
            sent += 65536
            yield b"z" * 65536

    try:
        response = client.post("/upload", content=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server may also close the connection mid-body: equally refused
    assert sent < 64 * MIB, "the server must stop reading at the limit"
    assert tmp_files(api) == []


@pytest.mark.attack("files")
@pytest.mark.parametrize("name", ["../escape.txt", ".", "..", "-rf", "nul\x00.txt",
                                  "bidi\u202etxt.exe", "\uff21.txt", "x" * 256, "tab\there",
                                  # nested paths: each segment by the same rules, depth-capped
                                  "/abs.txt", "a//b.txt", "a/../b.txt", "a/./b.txt", "dir/",
                                  "a/-rf", "a\\b.txt", "a/b/c/d/e.txt"])
def test_bad_file_names_are_rejected(client: httpx.Client, name: str) -> None:
    # built by hand: HTTP clients escape some of these bytes, an attacker does not
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + name.encode() + b"\"\r\n\r\ndata\r\n--b--\r\n")
    response = client.post("/upload", content=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"


def test_batch_reports_each_file(client: httpx.Client) -> None:
    files = [("files", ("good.txt", b"1", "text/plain")), ("files", ("../bad.txt", b"2",
             "text/plain")), ("files", ("also-good.txt", b"3", "text/plain"))]
    body = client.post("/upload/batch", files=files).json()
    assert body["message"] == "partial_success"
    assert (body["succeeded"], body["failed"]) == (2, 1)
    statuses = {f["filename"]: f["status"] for f in body["files"]}
    assert statuses == {"good.txt": "success", "../bad.txt": "error",
                        "also-good.txt": "success"}
    listed = client.get(f"/files/{body['session_id']}", params={"detail": "normalized"}).json()
    assert sorted(f["name"] for f in listed) == ["also-good.txt", "good.txt"]
    all_bad = client.post("/upload/batch", files=[("files", ("..", b"x", "text/plain"))])
    assert all_bad.status_code == 400 and all_bad.json()["message"] == "error"
    ok = client.post("/upload/batch", files=[("files", ("one.txt", b"x", "text/plain"))])
    assert ok.status_code == 200 and ok.json()["message"] == "success"


@pytest.mark.attack("files")
def test_upload_request_errors(client: httpx.Client) -> None:
    assert client.post("/upload", json={"file": "x"}).status_code == 415
    assert client.post("/upload", data={"entity_id": "e"}, files={}).status_code in (400, 415)
    no_file = client.post("/upload", files={"note": (None, "just a field")})
    assert no_file.status_code == 400
    too_many = client.post("/upload", files=[("files", (f"f{i}.txt", b"x", "text/plain"))
                                             for i in range(6)])
    assert too_many.status_code == 413
    broken = client.post("/upload", content=b"--b\r\nContent-Disposition: form-data; name=\"file\";"
                         b" filename=\"x\"\r\n\r\nunterminated",
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert broken.status_code == 400


@pytest.mark.attack("files")
@pytest.mark.parametrize("path,status", [
    # what today's client fetches answers as for an unknown id (never a 400 or 500)
    ("/download/short/AAAAAAAAAAAAAAAAAAAAA", 404),
    ("/download/AAAAAAAAAAAAAAAAAAAAA/has.dots.and.21.chars", 404),
    ("/download/AAAAAAAAAAAAAAAAAAAAA/x", 404),
    ("/sessions/x/objects/y", 400)])
def test_ids_are_checked_before_any_lookup(client: httpx.Client, path: str,
                                           status: int) -> None:
    assert client.get(path).status_code == status


@pytest.mark.attack("files")
def test_a_listing_of_a_malformed_or_unknown_session_is_empty(client: httpx.Client) -> None:
    for session in ("not-an-id", "Z" * 21, "a.b"):
        for detail in ("simple", "full"):
            response = client.get(f"/files/{session}", params={"detail": detail})
            assert (response.status_code, response.json()) == (200, [])


@pytest.mark.attack("files")
def test_traversal_in_the_path_is_not_a_route(client: httpx.Client) -> None:
    response = client.get("/download/AAAAAAAAAAAAAAAAAAAAA/..%2F..%2Fetc")
    assert response.status_code in (400, 404)
    assert "root:" not in response.text


def test_unknown_ids(client: httpx.Client) -> None:
    unknown = "Z" * 21
    assert client.get(f"/files/{unknown}").json() == []
    assert client.get(f"/download/{unknown}/{unknown}").status_code == 404
    assert client.get(f"/sessions/{unknown}/objects/{unknown}").status_code == 404
    assert client.delete(f"/files/{unknown}/{unknown}").status_code == 404
    response = client.post("/exec", json={"lang": "bash", "code": "true", "files": [
        {"id": unknown, "storage_session_id": unknown, "name": "x"}]})
    assert response.status_code == 404, response.text


@pytest.mark.attack("files")
def test_other_tenant_sees_nothing(client: httpx.Client, api: RunningApp) -> None:
    up = client.post("/upload", files={"file": ("secret.txt", b"tenant A only", "text/plain")})
    session, file_id = stored_id(up)
    ran = client.post("/exec", json={"lang": "bash", "code": "echo out > /mnt/data/o.txt"})
    exec_session = ran.json()["session_id"]
    with api.client(key=OTHER_KEY) as other:
        ref = {"id": file_id, "storage_session_id": session, "name": "secret.txt"}
        attempts = {
            "exec with file ref": other.post("/exec", json={"lang": "bash", "code": "true",
                                                            "files": [ref]}).status_code,
            "legacy file ref": other.post("/exec", json={
                "lang": "bash", "code": "true",
                "files": [{"id": file_id, "session_id": session}]}).status_code,
            "download": other.get(f"/download/{session}/{file_id}").status_code,
            "probe": other.get(f"/sessions/{session}/objects/{file_id}").status_code,
            "delete": other.delete(f"/files/{session}/{file_id}").status_code,
            "delete object": other.delete(
                f"/sessions/{session}/objects/{file_id}").status_code,
        }
        assert attempts == {"exec with file ref": 404, "legacy file ref": 404,
                            "download": 404, "probe": 404, "delete": 404, "delete object": 404}
        for detail in ("simple", "summary", "full", "normalized"):
            assert other.get(f"/files/{session}", params={"detail": detail}).json() == []
        # continuing A's session from B lands in a new session of B, without A's files
        hijack = other.post("/exec", json={"lang": "bash", "session_id": exec_session,
                                           "code": "ls /mnt/data"}).json()
        assert hijack["session_id"] != exec_session and hijack["stdout"] == ""
    # and nothing of A's was touched
    assert client.get(f"/download/{session}/{file_id}").content == b"tenant A only"
    assert len(client.get(f"/files/{exec_session}").json()) == 1


@pytest.mark.attack("files")
def test_output_file_caps_are_reported(client: httpx.Client) -> None:
    code = ("for i in range(8):\n    open(f'/mnt/data/f{i}.txt', 'w').write(str(i))\n"
            "open('/mnt/data/big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))\n")
    result = client.post("/exec", json={"lang": "py", "code": code}).json()
    assert len(result["files"]) == 5
    reasons = {s["name"]: s["reason"] for s in result["skipped_files"]}
    assert len(reasons) == 4
    assert any("larger than" in r for r in reasons.values())
    assert sum("more than 5 output files" in r for r in reasons.values()) >= 3


def test_files_survive_a_dying_sandbox(client: httpx.Client, api: RunningApp) -> None:
    first = client.post("/exec", json={"lang": "bash", "code": "echo keep > /mnt/data/k.txt"})
    session = first.json()["session_id"]
    # an OOM in the session
    oom = client.post("/exec", json={"lang": "py", "session_id": session, "code":
                                     "x = []\nwhile True:\n    x.append(b'x' * 2**26)\n"}).json()
    assert oom["status"] == "oom"
    # the sandbox destroyed from outside in the middle of a run
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    outcome: dict[str, int] = {}

    def run() -> None:
        response = client.post("/exec", json={
            "lang": "bash", "session_id": session, "code": "sleep 30"})
        # after ~2 s the keep-alive has sent the 200: the error is then the body
        failed_late = response.status_code == 200 and \
            response.json().get("error") == "sandbox_failed"
        outcome["status"] = 503 if failed_late else response.status_code

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not backend.pool_counts()["bash"].claimed and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = [s for s in backend.claimed() if s.language == "bash"]
    assert victims
    time.sleep(0.5)  # let the run reach the executor (either way the answer is a 503)
    api.run(victims[0].destroy())
    thread.join(timeout=150)
    assert outcome.get("status") == 503, outcome
    after = client.post("/exec", json={"lang": "bash", "session_id": session,
                                       "code": "cat /mnt/data/k.txt"}).json()
    assert after["stdout"] == "keep\n"


def test_exec_needs_json(client: httpx.Client) -> None:
    response = client.post("/exec", content=b"lang=py&code=print(1)",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
