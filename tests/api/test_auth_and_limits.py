"""Auth over real HTTP with LibreChat JWTs and body keys; rate limits across replicas."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import API_KEY, RunningApp, make_settings, start_app, stop_app


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "librechat", "aud": "codeapi", "sub": "user-7", "iat": now,
            "exp": now + 300, **over}


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def jwt_app(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path, valkey_url: str,
            ed_key: ed25519.Ed25519PrivateKey) -> Iterator[RunningApp]:
    pem = ed_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    settings = make_settings(tmp_path_factory.mktemp("jwt"), runtime_dir, valkey_url,
                             pool_sizes={}, pool_warmup_on_startup=False,
                             jwt_public_key=pem.decode(), body_key_auth=True,
                             execution_profiles=("default", "stateful"))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def _get_files(app: RunningApp, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{app.base_url}/files/{'A' * 21}", headers=headers)


def test_jwt_bearer_maps_to_its_tenant(jwt_app: RunningApp,
                                       ed_key: ed25519.Ed25519PrivateKey) -> None:
    token = jwt.encode(_claims(tenant_id="acme"), ed_key, algorithm="EdDSA")
    headers = {"Authorization": f"Bearer {token}"}
    up = httpx.post(f"{jwt_app.base_url}/upload", headers=headers,
                    files={"file": ("a.txt", b"acme data", "text/plain")}).json()
    session, file_id = up["session_id"], up["files"][0]["fileId"]
    assert httpx.get(f"{jwt_app.base_url}/download/{session}/{file_id}",
                     headers=headers).content == b"acme data"
    # the API key belongs to the default tenant: acme's file is not there for it
    assert httpx.get(f"{jwt_app.base_url}/download/{session}/{file_id}",
                     headers={"X-API-Key": API_KEY}).status_code == 404
    # another tenant's token neither
    other = jwt.encode(_claims(tenant_id="globex"), ed_key, algorithm="EdDSA")
    assert httpx.get(f"{jwt_app.base_url}/download/{session}/{file_id}",
                     headers={"Authorization": f"Bearer {other}"}).status_code == 404


def _entity_upload(app: RunningApp, key: ed25519.Ed25519PrivateKey, sub: str,
                   named: str) -> str:
    """Upload as the token's ``sub``, naming ``named`` as the user: the session used."""
    token = jwt.encode(_claims(tenant_id="acme", sub=sub), key, algorithm="EdDSA")
    answer = httpx.post(f"{app.base_url}/upload",
                        headers={"Authorization": f"Bearer {token}", "User-Id": named},
                        data={"entity_id": "assistant-1"},
                        files={"file": ("a.txt", sub.encode(), "text/plain")})
    assert answer.status_code == 200, answer.text
    session: str = answer.json()["session_id"]
    return session


@pytest.mark.attack("protocol")
def test_a_jwt_acts_for_its_own_subject(jwt_app: RunningApp,
                                        ed_key: ed25519.Ed25519PrivateKey) -> None:
    """Within a tenant, an entity's latest session is the token's user's: naming another
    user in the request reaches neither that user's session nor makes one for them."""
    bobs = _entity_upload(jwt_app, ed_key, "bob", "bob")
    # alice naming bob: her own entity session, not his
    assert _entity_upload(jwt_app, ed_key, "alice", "bob") != bobs
    alices = _entity_upload(jwt_app, ed_key, "alice", "alice")
    assert alices != bobs
    assert _entity_upload(jwt_app, ed_key, "bob", "alice") == bobs  # and the other way
    assert _entity_upload(jwt_app, ed_key, "alice", "mallory") == alices


@pytest.mark.attack("protocol")
def test_a_jwt_s_runtime_sessions_are_its_own(jwt_app: RunningApp,
                                              ed_key: ed25519.Ed25519PrivateKey) -> None:
    """Two users of one tenant naming the same runtime_session_hint: two runtime sessions,
    neither sees the other's kept work dir; nor does the tenant's API-key caller (its
    hints are the tenant's own), whatever it names."""
    def run(sub: str | None, code: str, hint: str = "shared-hint") -> dict[str, Any]:
        token = jwt.encode(_claims(tenant_id="default", sub=sub), ed_key, algorithm="EdDSA")
        auth = {"Authorization": f"Bearer {token}"} if sub else {"X-API-Key": API_KEY}
        answer = httpx.post(f"{jwt_app.base_url}/exec", timeout=120, json={
            "lang": "bash", "code": code, "runtime_session_hint": hint},
            headers={**auth, "X-CodeAPI-Expected-Profile": "stateful"})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    alice = run("alice", "echo secret > /mnt/data/mine.txt; ls /mnt/data")
    bob = run("bob", "ls /mnt/data")
    assert alice["runtime_status"] == bob["runtime_status"] == "created"
    assert alice["runtime_session_id"] != bob["runtime_session_id"]
    assert "mine.txt" not in bob["stdout"]
    again = run("alice", "cat /mnt/data/mine.txt")
    assert (again["runtime_status"], again["stdout"]) == ("reused", "secret\n")
    digest = hashlib.sha256(b"alice").hexdigest()
    for hint in ("shared-hint", f"shared-hint:u-{digest[:16]}", f"shared-hint:{digest}"):
        keyed = run(None, "ls /mnt/data", hint)
        assert keyed["runtime_session_id"] != alice["runtime_session_id"], hint
        assert "mine.txt" not in keyed["stdout"]


@pytest.mark.attack("protocol")
@pytest.mark.parametrize("case", ["expired", "audience", "issuer", "other key", "none"])
def test_bad_jwts_are_401(jwt_app: RunningApp, ed_key: ed25519.Ed25519PrivateKey,
                          case: str) -> None:
    if case == "expired":
        token = jwt.encode(_claims(exp=int(time.time()) - 3600), ed_key, algorithm="EdDSA")
    elif case == "audience":
        token = jwt.encode(_claims(aud="elsewhere"), ed_key, algorithm="EdDSA")
    elif case == "issuer":
        token = jwt.encode(_claims(iss="mallory"), ed_key, algorithm="EdDSA")
    elif case == "other key":
        token = jwt.encode(_claims(), rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048), algorithm="RS256")
    else:
        token = jwt.encode(_claims(), "", algorithm="none")
    response = _get_files(jwt_app, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_body_key_when_enabled(jwt_app: RunningApp) -> None:
    for field in ("LIBRECHAT_CODE_API_KEY", "apiKey", "api_key"):
        response = httpx.post(f"{jwt_app.base_url}/exec", timeout=60, json={
            "lang": "bash", "code": "echo body-key", field: API_KEY})
        assert response.status_code == 200, response.text
        assert response.json()["stdout"] == "body-key\n"
    wrong = httpx.post(f"{jwt_app.base_url}/exec", json={"lang": "bash", "code": "true",
                                                          "apiKey": "nope"})
    assert wrong.status_code == 401
    two = httpx.post(f"{jwt_app.base_url}/exec", json={"lang": "bash", "code": "true",
                                                        "apiKey": API_KEY, "api_key": "x"})
    assert two.status_code == 400


def test_body_key_is_off_by_default(api: RunningApp) -> None:
    response = httpx.post(f"{api.base_url}/exec", json={"lang": "bash", "code": "true",
                                                         "apiKey": API_KEY})
    assert response.status_code == 401


def test_rate_limit_is_exact_across_two_replicas(tmp_path: Path, runtime_dir: Path,
                                                 valkey_url: str) -> None:
    tenant_key = f"rl{int(time.time() * 1000)}:rate-limited-key"
    common: dict[str, Any] = {"pool_sizes": {}, "pool_warmup_on_startup": False,
                              "api_keys": (tenant_key,), "rate_limit_window": 3600,
                              "rate_limit_tenant": 7, "rate_limit_key": 100}
    first = start_app(make_settings(tmp_path / "a", runtime_dir, valkey_url, **common))
    second = start_app(make_settings(tmp_path / "b", runtime_dir, valkey_url, **common))
    try:
        headers = {"X-API-Key": tenant_key.split(":", 1)[1]}
        statuses = []
        for i in range(12):
            app = (first if i % 2 else second)[0]
            statuses.append(_get_files(app, headers))
        assert [r.status_code for r in statuses].count(200) == 7
        limited = [r for r in statuses if r.status_code == 429]
        assert len(limited) == 5
        body = limited[0].json()
        assert body["error"] == "rate_limited" and body["retry_after_seconds"] > 0
        assert int(limited[0].headers["Retry-After"]) == body["retry_after_seconds"]
        # health stays reachable for the orchestrator
        assert httpx.get(f"{first[0].base_url}/health").status_code == 200
    finally:
        stop_app(*first[1:])
        stop_app(*second[1:])
