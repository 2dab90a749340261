"""The state routes: GET (raw bytes, ETag, 304), POST (signed for the session), info, DELETE."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import httpx
import pytest

from tests.conftest import OTHER_KEY, RunningApp, free_port, start_app, stop_app
from tests.state.conftest import SMALL_MAX_BYTES
from tests.state.helpers import lz4_blob, run_py

UNKNOWN = "A" * 21


def test_download_with_etag_and_304(client: httpx.Client) -> None:
    session = run_py(client, "x = 41")["session_id"]
    response = client.get(f"/state/{session}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    blob = response.content
    digest = hashlib.sha256(blob).hexdigest()
    assert response.headers["etag"] == f'"{digest}"' and blob[:1] == b"\x01"
    for tag in (f'"{digest}"', f'W/"{digest}"', f'"other", "{digest}"', "*"):
        cached = client.get(f"/state/{session}", headers={"If-None-Match": tag})
        assert cached.status_code == 304 and cached.content == b"", tag
    assert client.get(f"/state/{session}", headers={"If-None-Match": '"old"'}).content == blob


def test_info_describes_without_the_blob(client: httpx.Client) -> None:
    answer = run_py(client, "x = [1, 2, 3]")
    session = answer["session_id"]
    info = client.get(f"/state/{session}/info").json()
    blob = client.get(f"/state/{session}").content
    assert info["exists"] is True and info["session_id"] == session
    assert info["size_bytes"] == len(blob) == answer["state_size"]
    assert info["hash"] == hashlib.sha256(blob).hexdigest()
    assert info["source"] == "valkey" and info["origin"] == "execution"
    assert info["created_at"].endswith("Z") and info["expires_at"].endswith("Z")
    assert client.get(f"/state/{UNKNOWN}/info").json() == {
        "exists": False, "session_id": UNKNOWN, "size_bytes": None, "hash": None,
        "created_at": None, "expires_at": None, "source": None, "origin": None}


def test_upload_restores_into_another_session(client: httpx.Client) -> None:
    source = run_py(client, "greeting = 'hello'\ndef shout():\n    return greeting.upper()")
    blob = client.get(f"/state/{source['session_id']}").content
    target = run_py(client, "pass")["session_id"]
    response = client.post(f"/state/{target}", content=blob,
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    assert response.json() == {"message": "state_uploaded", "session_id": target,
                               "size": len(blob), "hash": hashlib.sha256(blob).hexdigest()}
    assert client.get(f"/state/{target}/info").json()["origin"] == "upload"
    answer = run_py(client, "greeting = 'again'\nprint(shout())", target)
    assert answer["stdout"] == "AGAIN\n", answer


def test_delete(client: httpx.Client) -> None:
    session = run_py(client, "x = 1")["session_id"]
    assert client.delete(f"/state/{session}").status_code == 204
    assert client.get(f"/state/{session}/info").json()["exists"] is False
    assert client.get(f"/state/{session}").status_code == 404
    assert client.delete(f"/state/{session}").status_code == 204  # idempotent
    answer = run_py(client, "print('x' in dir())", session)
    assert answer["stdout"] == "False\n"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_ids_of_the_wrong_shape_are_400(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/state/not-an-id", content=b"\x01",
                              headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert client.get("/state/short/info").status_code == 400


def test_unknown_session_and_other_tenants(client: httpx.Client, api: RunningApp,
                                           runtime_dir: Path) -> None:
    blob = lz4_blob(runtime_dir, b"\x80\x05N.")  # pickle of None
    unknown = client.post(f"/state/{UNKNOWN}", content=blob,
                          headers={"Content-Type": "application/octet-stream"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert client.get(f"/state/{UNKNOWN}").status_code == 404
    session = run_py(client, "mine = 1")["session_id"]
    with api.client(OTHER_KEY) as other:
        assert other.get(f"/state/{session}").status_code == 404
        assert other.get(f"/state/{session}/info").json()["exists"] is False
        refused = other.post(f"/state/{session}", content=blob,
                             headers={"Content-Type": "application/octet-stream"})
        assert refused.status_code == 404
        assert other.delete(f"/state/{session}").status_code == 204
    assert client.get(f"/state/{session}/info").json()["exists"] is True  # untouched


def test_malformed_uploads(client: httpx.Client, runtime_dir: Path) -> None:
    session = run_py(client, "pass")["session_id"]
    good = lz4_blob(runtime_dir, b"\x80\x05N.")

    def post(body: bytes, content_type: str = "application/octet-stream") -> httpx.Response:
        return client.post(f"/state/{session}", content=body,
                           headers={"Content-Type": content_type})

    assert post(good, "application/json").status_code == 415
    for body in (b"", b"\x01", b"\x02" + good[1:], b"\x01" + b"not an lz4 frame at all",
                 b"\x01\x04\x22\x4d\x18\xc0\x40"):
        response = post(body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_state"
    assert post(good).status_code == 201


def test_size_cap_while_streaming(small_api: RunningApp) -> None:
    with small_api.client() as client:
        session = run_py(client, "pass")["session_id"]

        def chunks() -> list[bytes]:
            return [b"\x01" + b"\0" * 65535] * (SMALL_MAX_BYTES // 65536 + 2)

        response = client.post(f"/state/{session}", content=iter(chunks()),
                               headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 413
        assert response.json()["error"] == "state_too_large"
        assert client.get("/health").status_code == 200


def test_the_schema_documents_the_state_routes(api: RunningApp) -> None:
    paths = httpx.get(f"{api.base_url}/schema/openapi.json").json()["paths"]
    download = paths["/state/{session_id}"]["get"]
    assert set(download["responses"]) >= {"200", "304", "400", "404"}
    assert list(download["responses"]["200"]["content"]) == ["application/octet-stream"]
    assert any(p["name"] == "If-None-Match" for p in download["parameters"])
    upload = paths["/state/{session_id}"]["post"]
    assert list(upload["requestBody"]["content"]) == ["application/octet-stream"]
    assert set(upload["responses"]) >= {"201", "400", "404", "413", "415"}
    assert "204" in paths["/state/{session_id}"]["delete"]["responses"]
    assert "200" in paths["/state/{session_id}/info"]["get"]["responses"]


def test_state_switched_off(api: RunningApp) -> None:
    settings = attrs.evolve(api.settings, port=free_port(),
                            state=attrs.evolve(api.settings.state, enabled=False))
    running, server, thread = start_app(attrs.evolve(
        settings, data_dir=api.settings.data_dir.parent / "state-off"))
    try:
        with running.client() as client:
            first = run_py(client, "x = 1")
            assert first["has_state"] is None and first["state_errors"] is None
            answer = run_py(client, "print('x' in dir())", first["session_id"])
            assert answer["stdout"] == "False\n"
            refused = client.post(f"/state/{first['session_id']}", content=b"\x01",
                                  headers={"Content-Type": "application/octet-stream"})
            assert refused.status_code == 400
    finally:
        stop_app(server, thread)
