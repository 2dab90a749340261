"""Tenants: keys issued with the CLI, per-tenant quotas, and the brute-force guard."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings, SettingsError, TenantLimits, TenantSettings
from tests.conftest import RunningApp, make_settings, start_app, stop_app

REPO = Path(__file__).resolve().parents[2]


def k8si(valkey_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VALKEY_URL": valkey_url}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
            valkey_url: str) -> Iterator[RunningApp]:
    """An app whose tenants have small quotas (its own Valkey database: own counters)."""
    tenants = TenantSettings(
        defaults=TenantLimits(executions_per_window=0, concurrent_executions=0,
                              storage_bytes=0, files=0, max_timeout=0),
        overrides={"small": TenantLimits(executions_per_window=5, concurrent_executions=1,
                                         storage_bytes=1000, files=3, max_timeout=2),
                   "tiny": TenantLimits(executions_per_window=0, concurrent_executions=0,
                                        storage_bytes=300, files=10, max_timeout=1,
                                        max_memory_mb=64)},
        window=3600, auth_failures_per_window=5)
    settings = make_settings(tmp_path_factory.mktemp("limited"), runtime_dir,
                             valkey_url.rsplit("/", 1)[0] + "/5", pool_sizes={},
                             pool_warmup_on_startup=False, tenants=tenants,
                             api_keys=("small:small-key", "big:big-key", "tiny:tiny-key"))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def test_keys_issued_with_the_cli_work_until_revoked(api: RunningApp, valkey_url: str) -> None:
    created = k8si(valkey_url, "keys", "create", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    key, key_id = fields["key"], fields["id"]
    listed = k8si(valkey_url, "keys", "list")
    assert key_id in listed.stdout and "tenant=acme" in listed.stdout
    assert key not in listed.stdout, "keys are never shown again"
    with api.client(key=key) as client:
        up = client.post("/upload", files={"file": ("a.txt", b"acme", "text/plain")})
        assert up.status_code == 200
        session, file_id = up.json()["session_id"], up.json()["files"][0]["fileId"]
    with api.client() as default_tenant:  # another tenant: sees nothing of acme's
        assert default_tenant.get(f"/download/{session}/{file_id}").status_code == 404
    revoked = k8si(valkey_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stdout
    with api.client(key=key) as client:
        assert client.get(f"/files/{session}").status_code == 401
    assert k8si(valkey_url, "keys", "revoke", key_id).returncode == 1


def test_concurrent_executions_per_tenant(limited: RunningApp) -> None:
    def run(key: str) -> int:
        return httpx.post(f"{limited.base_url}/exec", headers={"X-API-Key": key}, timeout=60,
                          json={"lang": "bash", "code": "sleep 1.5"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        small = list(pool.map(run, ["small-key", "small-key"]))
    # concurrency 1: the second waits for the first (QUEUE_TIMEOUT) instead of a 429;
    # the 429 once the wait is over is tested in test_admission.py
    assert small == [200, 200], "a tenant with concurrency 1 runs one at a time"
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        big = list(pool.map(run, ["big-key", "big-key"]))
    assert big == [200, 200], "other tenants are not affected"


def test_executions_per_window_per_tenant(limited: RunningApp) -> None:
    with limited.client(key="small-key") as client:
        statuses = [client.post("/exec", json={"lang": "bash", "code": "true"}).status_code
                    for _ in range(6)]
    # one execution of this tenant already ran in the concurrency test
    assert statuses.count(429) >= 2 and statuses[0] == 200
    body = client_json_429(limited)
    assert body["error"] == "rate_limited" and int(str(body["retry_after_seconds"])) > 0


def client_json_429(app: RunningApp) -> dict[str, object]:
    response = httpx.post(f"{app.base_url}/exec", headers={"X-API-Key": "small-key"},
                          json={"lang": "bash", "code": "true"})
    assert response.status_code == 429
    assert response.headers["Retry-After"]
    body: dict[str, object] = response.json()
    return body


def test_storage_quota_on_both_sides(limited: RunningApp) -> None:
    with limited.client(key="small-key") as client:
        first = client.post("/upload", files={"file": ("a.bin", b"x" * 600, "x/y")})
        assert first.status_code == 200
        over = client.post("/upload", files={"file": ("b.bin", b"x" * 401, "x/y")})
        assert over.status_code == 413 and over.json()["error"] == "quota_exceeded"
        assert "quota" in over.json()["message"] and "b.bin" in over.json()["message"]
        exact = client.post("/upload", files={"file": ("c.bin", b"x" * 400, "x/y")})
        assert exact.status_code == 200, "exactly at the quota is allowed"
        session, file_id = first.json()["session_id"], first.json()["files"][0]["fileId"]
        assert client.delete(f"/files/{session}/{file_id}").status_code == 200
        again = client.post("/upload", files={"file": ("d.bin", b"x" * 600, "x/y")})
        assert again.status_code == 200, "a delete gives the bytes back"
    with limited.client(key="big-key") as other:
        assert other.post("/upload", files={"file": ("e.bin", b"x" * 5000, "x/y")}
                          ).status_code == 200


def test_tenant_maximum_timeout_and_output_quota(limited: RunningApp) -> None:
    with limited.client(key="tiny-key") as client:
        slow = client.post("/exec", json={"lang": "bash", "code": "sleep 10",
                                          "timeout": 30}).json()
        assert slow["status"] == "timeout" and slow["wall_time"] < 5, "tenant max: 1 s"
        code = ("head -c 200 /dev/zero > /mnt/data/a.bin; "
                "head -c 200 /dev/zero > /mnt/data/b.bin")
        body = client.post("/exec", json={"lang": "bash", "code": code}).json()
    assert [f["name"] for f in body["files"]] == ["a.bin"]
    [skipped] = body["skipped_files"]
    assert skipped["name"] == "b.bin" and "quota" in skipped["reason"]


def test_tenant_maximum_memory(limited: RunningApp) -> None:
    # 250 MB: over tiny's 64 MB (plus the 128 MB of tmpfs budget every sandbox has),
    # under the global 256 MB (plus the same) that other tenants get.
    code = ("python3 -c \"x = bytearray(250 * 2**20); x[::4096] = b'x' * len(x[::4096]); "
            "print('fit')\"")
    with limited.client(key="tiny-key") as tiny:
        body = tiny.post("/exec", json={"lang": "bash", "code": code, "timeout": 1}).json()
    assert body["status"] == "oom", body
    with limited.client(key="big-key") as big:
        assert big.post("/exec", json={"lang": "bash", "code": code}).json()["stdout"] == "fit\n"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
            valkey_url: str) -> Iterator[RunningApp]:
    """An app behind a trusted proxy (``FORWARDED_ALLOW_IPS``: the tests' own address),
    with a brute-force guard of 3 failures (its own Valkey database)."""
    tenants = TenantSettings(defaults=TenantLimits(executions_per_window=0,
                                                   concurrent_executions=0),
                             window=3600, auth_failures_per_window=3)
    settings = make_settings(tmp_path_factory.mktemp("proxied"), runtime_dir,
                             valkey_url.rsplit("/", 1)[0] + "/6", pool_sizes={},
                             pool_warmup_on_startup=False, tenants=tenants,
                             api_keys=("acme:acme-key",),
                             forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8"))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


@pytest.mark.attack("protocol")
def test_behind_a_trusted_proxy_each_client_has_its_own_guard(proxied: RunningApp) -> None:
    """Every request comes from the proxy: without ``FORWARDED_ALLOW_IPS`` one client's
    failures would lock every client out. The address is the right-most one the trusted
    proxies did not add, so a client's own ``X-Forwarded-For`` entries buy nothing."""
    url = f"{proxied.base_url}/files/{'A' * 21}"

    def get(key: str, forwarded: str) -> int:
        return httpx.get(url, headers={"X-API-Key": key,
                                       "X-Forwarded-For": forwarded}).status_code

    attacker = "203.0.113.66"
    assert [get(f"guess-{i}", attacker) for i in range(4)] == [401, 401, 401, 429]
    assert get("acme-key", "198.51.100.7") == 200, "another client is not locked out"
    assert get("acme-key", f"{attacker}, 10.1.2.3") == 429, "seen through a second proxy"
    # the attacker's own entries to the left of what the proxy appended change nothing
    assert get("guess-x", f"198.51.100.99, {attacker}") == 429


def test_forwarded_allow_ips_must_name_addresses() -> None:
    for refused in ("127.0.0.1,*", "10.0.0.1/8", "proxy.local"):  # * would trust a spoofer;
        with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS"):  # uvicorn would never
            Settings.from_env({"FORWARDED_ALLOW_IPS": refused})  # match a host-bits network
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, ::1"}
                             ).forwarded_allow_ips == ("10.0.0.0/8", "::1")


# Last in this module: it blocks the test client's address for the window.
@pytest.mark.attack("protocol")
def test_brute_force_is_slowed_down(limited: RunningApp) -> None:
    statuses = [httpx.get(f"{limited.base_url}/files/{'A' * 21}",
                          headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(7)]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # forwarded headers do not buy a fresh budget
    spoofed = httpx.get(f"{limited.base_url}/files/{'A' * 21}",
                        headers={"X-API-Key": "guess", "X-Forwarded-For": "10.1.2.3",
                                 "X-Real-IP": "10.1.2.3"})
    assert spoofed.status_code == 429
