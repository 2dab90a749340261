"""Attack class 5 of security.md: malicious pickles, replays, lz4 bombs, oversized state.

Each case is refused (before any sandbox sees the blob) or fails cleanly inside the
sandbox; nothing runs in the API process, and the service stays healthy.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import httpx
import pytest
import valkey

from tests.conftest import OTHER_KEY, RunningApp
from tests.security.sandbox_checks import assert_sandbox_posture
from tests.state.helpers import assert_healthy, bomb_blob, error_names, lz4_blob, run_py

GIB = 1024 * 1024 * 1024

pytestmark = pytest.mark.attack("state")


@pytest.fixture(scope="module", autouse=True)
def _posture(api: RunningApp) -> None:
    with api.client() as http:
        assert_sandbox_posture(http)


@pytest.fixture
def store(valkey_url: str) -> valkey.Valkey:
    return valkey.Valkey.from_url(valkey_url)


def _key(tenant: str, session: str) -> str:
    return f"k8si:state:{tenant}:{session}"


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_state"


def test_the_sandbox_never_sees_the_signing_key(client: httpx.Client, api: RunningApp) -> None:
    path = api.settings.data_dir / "state-key"
    key = path.read_text().strip()
    code = f"""
try:
    print(open({str(path)!r}).read())
except OSError as exc:
    print("unreadable", type(exc).__name__)
print({key!r} in open("/proc/1/cmdline").read())
"""
    answer = run_py(client, code)
    assert answer["stdout"].splitlines() == ["unreadable FileNotFoundError", "False"], answer
    assert key not in answer["stdout"]


def test_tampered_blob_in_valkey_is_refused(client: httpx.Client, store: valkey.Valkey) -> None:
    session = run_py(client, "x = 1")["session_id"]
    blob = store.hget(_key("default", session), "blob")
    assert isinstance(blob, bytes)
    store.hset(_key("default", session), "blob", blob[:-1] + bytes([blob[-1] ^ 1]))
    _refused(client.post("/exec", json={"lang": "py", "code": "print(x)",
                                        "session_id": session}))
    # the bad blob was discarded: the session goes on with an empty namespace
    answer = run_py(client, "print('x' in dir())", session)
    assert answer["status"] == "ok" and answer["stdout"] == "False\n"
    assert_healthy(client)


def test_blob_and_signature_replayed_into_another_session(
        client: httpx.Client, api: RunningApp, store: valkey.Valkey) -> None:
    source = run_py(client, "stolen = 'from A'")["session_id"]
    record = store.hgetall(_key("default", source))
    target = run_py(client, "mine = 1")["session_id"]
    store.delete(_key("default", target))
    store.hset(_key("default", target), mapping=record)  # type: ignore[arg-type]
    _refused(client.post("/exec", json={"lang": "py", "code": "print(stolen)",
                                        "session_id": target}))
    assert client.get(f"/state/{target}").status_code == 404  # discarded when refused
    store.hset(_key("default", target), mapping=record)  # type: ignore[arg-type]
    _refused(client.get(f"/state/{target}"))  # a download checks it too
    # into another tenant's session
    with api.client(OTHER_KEY) as other:
        foreign = run_py(other, "theirs = 1")["session_id"]
        store.hset(_key("other", foreign), mapping=record)  # type: ignore[arg-type]
        _refused(other.post("/exec", json={"lang": "py", "code": "print(stolen)",
                                           "session_id": foreign}))
    assert run_py(client, "print(stolen)", source)["stdout"] == "from A\n"
    assert_healthy(client)


def test_blob_put_in_valkey_by_hand_is_refused(client: httpx.Client, store: valkey.Valkey,
                                               runtime_dir: Path) -> None:
    session = run_py(client, "pass")["session_id"]
    blob = lz4_blob(runtime_dir, pickle.dumps({"namespace": {"planted": 1}, "modules": {}}))
    store.hset(_key("default", session), mapping={
        "blob": blob, "size": str(len(blob)), "sha256": "0" * 64, "signature": "0" * 64,
        "created_at": "0", "origin": "execution"})
    _refused(client.post("/exec", json={"lang": "py", "code": "print(planted)",
                                        "session_id": session}))
    assert_healthy(client)


class _Payload:
    """Unpickling this runs ``code``: exactly what a malicious state would do."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.code,)


def test_malicious_pickle_only_ever_runs_inside_a_sandbox(
        client: httpx.Client, runtime_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran-on-the-host"
    code = (f"import os\ntry:\n    open({str(marker)!r}, 'w').write('pwned')\n"
            "except OSError:\n    pass\n"
            "open('/mnt/data/ran-in-sandbox.txt', 'w').write(str(os.getpid()))\n")
    blob = lz4_blob(runtime_dir, pickle.dumps(_Payload(code), protocol=5))
    session = run_py(client, "pass")["session_id"]
    uploaded = client.post(f"/state/{session}", content=blob,
                           headers={"Content-Type": "application/octet-stream"})
    assert uploaded.status_code == 201, uploaded.text
    assert client.get(f"/state/{session}").content == blob  # opaque bytes, handed back
    assert client.get(f"/state/{session}/info").json()["exists"] is True
    assert not marker.exists(), "the API process unpickled the blob"
    answer = run_py(client, "print('after')", session)
    assert not marker.exists(), "the pickle ran outside a sandbox"
    # It did run, inside the sandbox, where the host path does not exist; the run went on.
    assert answer["status"] == "ok" and answer["stdout"] == "after\n", answer
    assert [f["name"] for f in answer["files"]] == ["ran-in-sandbox.txt"]
    assert "could not be restored" in answer["stderr"]
    assert "*" in error_names(answer)
    assert_healthy(client)


def test_lz4_bomb_declaring_its_size_is_refused_by_the_api(client: httpx.Client,
                                                           runtime_dir: Path) -> None:
    session = run_py(client, "pass")["session_id"]
    blob = bomb_blob(runtime_dir, 3 * GIB, declare=True)
    assert len(blob) < 64 * 1024 * 1024
    response = client.post(f"/state/{session}", content=blob,
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413 and response.json()["error"] == "state_too_large"
    assert client.get(f"/state/{session}/info").json()["exists"] is False
    assert_healthy(client)


def test_lz4_bomb_without_a_declared_size_is_stopped_in_the_sandbox(
        client: httpx.Client, runtime_dir: Path) -> None:
    session = run_py(client, "pass")["session_id"]
    blob = bomb_blob(runtime_dir, 3 * GIB, declare=False)
    uploaded = client.post(f"/state/{session}", content=blob,
                           headers={"Content-Type": "application/octet-stream"})
    assert uploaded.status_code == 201  # the API cannot know without decompressing: it doesn't
    answer = run_py(client, "print('still fine')", session)
    assert answer["status"] == "ok" and answer["stdout"] == "still fine\n", answer
    assert "decompresses to more than" in answer["stderr"]
    assert answer["wall_time"] < 10
    assert_healthy(client)


def test_two_gigabyte_namespace_is_reported_not_kept(client: httpx.Client) -> None:
    code = """
import numpy as np
big = np.zeros(2 * 1024 ** 3, dtype=np.uint8)  # 2 GiB, untouched pages
small = 1
"""
    first = run_py(client, code)
    assert first["status"] == "ok", first
    assert error_names(first) == {"big"}
    assert "too large" in first["state_errors"][0]["error"]
    assert first["has_state"] is True and first["state_size"] < 1024 * 1024
    answer = run_py(client, "print(small, 'big' in dir())", first["session_id"])
    assert answer["stdout"] == "1 False\n", answer
    assert_healthy(client)
