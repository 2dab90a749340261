"""The scripts the image builds and the object-store component run, run for real:
``harden.py`` (strips setuid/setgid/capabilities), ``check-toolchains.py`` (language
probes with the executor's environment) and ``garage-init.py`` (Garage's admin API,
here a small stand-in server speaking the v1 endpoints it calls)."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from .kube import REPO

HARDEN = REPO / "runtime-images" / "harden.py"
CHECK = REPO / "runtime-images" / "check-toolchains.py"
GARAGE_INIT = REPO / "kustomize" / "components" / "object-store" / "garage-init.py"


def _run(script: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def test_harden_strips_setuid_and_setgid(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    suid, sgid, plain = tmp_path / "bin" / "su", tmp_path / "bin" / "wall", tmp_path / "plain"
    for path, mode in ((suid, 0o4755), (sgid, 0o2755), (plain, 0o755)):
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    (tmp_path / "link").symlink_to(suid)
    report = _run(HARDEN, "--check", str(tmp_path))
    assert report.returncode == 1
    assert f"setuid {suid}" in report.stderr and f"setgid {sgid}" in report.stderr
    assert str(plain) not in report.stderr
    done = _run(HARDEN, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(suid.stat().st_mode) == 0o755
    assert stat.S_IMODE(sgid.stat().st_mode) == 0o755
    assert _run(HARDEN, "--check", str(tmp_path)).returncode == 0


def test_harden_removes_file_capabilities(tmp_path: Path) -> None:
    target = tmp_path / "ping"
    target.write_bytes(b"\x7fELF")
    # struct vfs_cap_data, revision 2: cap_net_raw (13) permitted and effective.
    value = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    try:
        os.setxattr(target, "security.capability", value)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"cannot set file capabilities here ({exc.strerror})")
        raise
    assert "capability" in _run(HARDEN, "--check", str(tmp_path)).stderr
    assert _run(HARDEN, str(tmp_path)).returncode == 0
    assert "security.capability" not in os.listxattr(target)


def _check_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_check_toolchains_runs_probes_like_the_executor() -> None:
    done = _run(CHECK, "bash", "--import", "json", env=_check_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bash  ok" in done.stdout and "import json ok" in done.stdout


def test_check_toolchains_fails_the_build_on_a_problem() -> None:
    assert _run(CHECK, "cobol", env=_check_env()).returncode == 2
    missing = _run(CHECK, "bash", "--import", "no_such_module_k8si", env=_check_env())
    assert missing.returncode == 1 and "FAIL" in missing.stdout


class _FakeGarage(BaseHTTPRequestHandler):
    """Garage's admin API v1, as much as garage-init.py uses; state on the server."""

    server: Any

    def log_message(self, *args: object) -> None:
        return

    def _answer(self, status: int, body: object = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        state, url = self.server.state, urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers["Authorization"] != "Bearer admin-token":
            return self._answer(403, {"code": "Forbidden"})
        if url.path == "/v1/status":
            return self._answer(200, {"node": "ab" * 32, "layout": state["layout"]})
        if url.path == "/v1/key":
            known = query["id"] in state["keys"]
            return self._answer(200 if known else 404, {"accessKeyId": query["id"]})
        if url.path == "/v1/bucket":
            bucket = state["buckets"].get(query["globalAlias"])
            return self._answer(200, bucket) if bucket else self._answer(404, {})
        return self._answer(404, {})

    def do_POST(self) -> None:
        state, path = self.server.state, urlparse(self.path).path
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
        state["calls"].append(path)
        if path == "/v1/layout":
            state["staged"] = body
        elif path == "/v1/layout/apply":
            assert body["version"] == state["layout"]["version"] + 1
            state["layout"] = {"version": body["version"], "roles": state.pop("staged")}
        elif path == "/v1/key/import":
            state["keys"][body["accessKeyId"]] = body["secretAccessKey"]
        elif path == "/v1/bucket":
            state["buckets"][body["globalAlias"]] = {"id": "b" * 64}
            return self._answer(200, state["buckets"][body["globalAlias"]])  # BucketInfo
        elif path == "/v1/bucket/allow":
            state["allowed"] = (body["bucketId"], body["accessKeyId"], body["permissions"])
        return self._answer(200, {"ok": True})


@pytest.fixture
def fake_garage() -> Iterator[tuple[str, dict[str, Any]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGarage)
    server.state = {"layout": {"version": 0, "roles": []}, "keys": {}, "buckets": {},  # type: ignore[attr-defined]
                    "calls": []}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _garage_init() -> ModuleType:
    spec = importlib.util.spec_from_file_location("garage_init", GARAGE_INIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_garage_init_prepares_the_store_once(fake_garage: tuple[str, dict[str, Any]]) -> None:
    url, state = fake_garage
    env = {"GARAGE_ADMIN_URL": url, "GARAGE_ADMIN_TOKEN": "admin-token",
           "OBJECT_STORE_URL": "s3://k8si", "AWS_ACCESS_KEY_ID": "GK" + "0" * 24,
           "AWS_SECRET_ACCESS_KEY": "f" * 64, "GARAGE_WAIT_SECONDS": "5"}
    module = _garage_init()
    assert module.main(env) == 0
    assert state["layout"]["version"] == 1 and state["layout"]["roles"][0]["id"] == "ab" * 32
    assert state["keys"] == {"GK" + "0" * 24: "f" * 64}
    assert state["allowed"] == ("b" * 64, "GK" + "0" * 24,
                                {"read": True, "write": True, "owner": False})
    first = list(state["calls"])
    assert module.main(env) == 0, "a second run is harmless"
    assert state["calls"][len(first):] == ["/v1/bucket/allow"]
    with pytest.raises(ValueError, match="s3://"):
        module.bucket_name("https://example/bucket")
