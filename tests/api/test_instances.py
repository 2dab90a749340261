"""Whole-service scenarios that need their own instance: missing toolchains, `k8si serve`."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.paths import scratch_dir
from sidecar import languages
from tests.conftest import free_port, make_settings, start_app, stop_app


def test_missing_toolchain_is_reported_not_a_crash(
        tmp_path: Path, runtime_dir: Path, valkey_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(languages.LANGUAGES["d"],
                                  version_probe=("gdc-not-installed-here", "--version"))
    monkeypatch.setitem(languages.LANGUAGES, "d", missing)
    settings = make_settings(tmp_path, runtime_dir, valkey_url, pool_sizes={})
    running, server, thread = start_app(settings)
    try:
        with running.client() as http:
            ready = http.get("/health/ready").json()
            assert ready["status"] == "healthy"
            unavailable = ready["services"]["languages"]["unavailable"]
            assert "d" in unavailable and "not installed" in unavailable["d"]
            response = http.post("/exec", json={"lang": "d", "code": "void main() {}"})
            assert response.status_code == 400
            assert response.json()["error"] == "language_unavailable"
            assert "install-toolchains" in response.json()["message"]
            # everything else keeps working
            ok = http.post("/exec", json={"lang": "bash", "code": "echo fine"}).json()
            assert ok["stdout"] == "fine\n"
    finally:
        stop_app(server, thread)


def test_k8si_serve_from_the_readme(tmp_path: Path, runtime_dir: Path) -> None:
    """`k8si serve` with embedded defaults: generated key, embedded Valkey, print(1)."""
    port = free_port()
    scratch = scratch_dir(tmp_path / "data")  # where the service puts it (made here first)
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "VALKEY_URL")}
    env.update(DATA_DIR=str(tmp_path / "data"), RUNTIME_DIR=str(runtime_dir),
               POD_POOL_PY="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    assert process.stdout is not None
    # Keep reading the server's output so its pipe never fills up.
    reader = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        key = None
        deadline = time.monotonic() + 120
        while key is None and time.monotonic() < deadline:
            match = re.search(r"API key \(from .*\): (\S+)", "".join(output))
            key = match.group(1) if match else None
            time.sleep(0.05)
        assert key, "".join(output)
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        response = httpx.post(f"{base}/exec", headers={"X-API-Key": key}, timeout=60,
                              json={"lang": "py", "code": "print(1)"})
        assert response.status_code == 200, response.text
        assert response.json()["stdout"] == "1\n"
        assert (tmp_path / "data" / "api-key").read_text().strip() == key
        assert (scratch / "valkey.sock").exists()
        assert any((scratch / "sandboxes").iterdir())  # the warm sandbox's directory
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0, "".join(output)
    # a clean shutdown leaves no sandbox behind, nor its scratch directory (in memory)
    assert not scratch.exists()
