"""The archive (state evicted from Valkey comes back from the object store), the size
caps of a capture, and ``STATE_CAPTURE_ON_ERROR`` off — on an API with small limits."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey

from tests.conftest import RunningApp
from tests.state.helpers import assert_healthy, error_names, run_py


@pytest.fixture
def client_small(small_api: RunningApp) -> httpx.Client:
    return small_api.client()


def _archive_path(app: RunningApp, tenant: str, session: str) -> Path:
    return app.settings.data_dir / "objects" / "k8si.state" / tenant / session


def _wait_archived(app: RunningApp, session: str) -> Path:
    path = _archive_path(app, "default", session)
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, "the idle state was never archived"
        time.sleep(0.2)
    return path


def test_state_evicted_from_valkey_comes_back_from_the_archive(
        small_api: RunningApp, client_small: httpx.Client, valkey_url: str) -> None:
    store = valkey.Valkey.from_url(valkey_url)
    session = run_py(client_small, "x = 41\ndef f():\n    return x")["session_id"]
    blob = client_small.get(f"/state/{session}").content
    _wait_archived(small_api, session)
    store.delete(f"k8si:state:default:{session}")  # evicted from Valkey
    info = client_small.get(f"/state/{session}/info").json()
    assert info["exists"] is True and info["source"] == "archive"
    assert info["expires_at"] is None
    assert client_small.get(f"/state/{session}").content == blob  # checked, then hot again
    assert client_small.get(f"/state/{session}/info").json()["source"] == "valkey"
    store.delete(f"k8si:state:default:{session}")
    answer = run_py(client_small, "print(x + 1, f())", session)
    assert answer["stdout"] == "42 41\n", answer


def test_a_session_whose_record_expired_keeps_its_archived_state(
        small_api: RunningApp, client_small: httpx.Client, valkey_url: str) -> None:
    store = valkey.Valkey.from_url(valkey_url)
    session = run_py(client_small, "kept = 'yes'")["session_id"]
    _wait_archived(small_api, session)
    store.delete(f"k8si:state:default:{session}", f"k8si:session:{session}")
    answer = run_py(client_small, "print(kept)", session)
    assert answer["session_id"] == session and answer["stdout"] == "yes\n", answer


def test_adopting_an_expired_session_leaves_its_entity_pointing_at_it(
        small_api: RunningApp, client_small: httpx.Client, valkey_url: str) -> None:
    """Named with its entity after its record expired, the session is adopted back; no
    empty session is made meanwhile and left as the entity's latest."""
    store = valkey.Valkey.from_url(valkey_url)
    entity = f"e{secrets.token_hex(6)}"

    def run(code: str, **fields: str) -> dict[str, Any]:
        body = client_small.post("/exec", json={"lang": "py", "code": code,
                                                "entity_id": entity, **fields}).json()
        assert body["status"] == "ok", body
        return dict(body)

    session = run("kept = 'yes'")["session_id"]
    store.delete(f"k8si:session:{session}")  # its record expired; its state did not
    assert run("print(kept)", session_id=session)["session_id"] == session
    later = run("print(kept)")  # the entity alone: its latest session is still that one
    assert later["session_id"] == session and later["stdout"] == "yes\n", later


def test_a_tampered_archive_is_refused(small_api: RunningApp, client_small: httpx.Client,
                                       valkey_url: str) -> None:
    store = valkey.Valkey.from_url(valkey_url)
    session = run_py(client_small, "x = 1")["session_id"]
    path = _wait_archived(small_api, session)
    store.delete(f"k8si:state:default:{session}")
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    response = client_small.post("/exec", json={"lang": "py", "code": "print(x)",
                                                "session_id": session})
    assert response.status_code == 400 and response.json()["error"] == "invalid_state"
    assert not path.exists()  # discarded everywhere
    assert_healthy(client_small)


def test_values_over_the_caps_are_reported(client_small: httpx.Client) -> None:
    code = """
import os
noise = os.urandom(1024 * 1024)        # incompressible: over 256 KiB once stored
zeros = bytes(8 * 1024 * 1024)         # compressible, but over 4 MiB once pickled
small = "kept"
"""
    first = run_py(client_small, code)
    assert first["status"] == "ok", first
    assert error_names(first) == {"noise", "zeros"}
    assert all("too large" in e["error"] for e in first["state_errors"])
    answer = run_py(client_small, "print(small, 'noise' in dir(), 'zeros' in dir())",
                    first["session_id"])
    assert answer["stdout"] == "kept False False\n", answer


def test_values_too_large_together(client_small: httpx.Client) -> None:
    code = """
import os
parts = {f"p{i}": os.urandom(100 * 1024) for i in range(4)}
globals().update(parts)
del parts
"""
    first = run_py(client_small, code)
    kept = {"p0", "p1", "p2", "p3"} - error_names(first)
    assert 1 <= len(kept) < 4, first
    assert all("together" in e["error"] for e in first["state_errors"])


def test_no_capture_after_a_failed_run_when_switched_off(client_small: httpx.Client) -> None:
    session = run_py(client_small, "v = 1")["session_id"]
    failed = run_py(client_small, "v = 2\nraise RuntimeError('no')", session)
    assert failed["status"] == "error" and failed["has_state"] is True
    exited = run_py(client_small, "import sys\nv = 3\nsys.exit(1)", session)
    assert exited["status"] == "error"
    assert run_py(client_small, "print(v)", session)["stdout"] == "1\n"
    ok_exit = run_py(client_small, "import sys\nv = 4\nsys.exit(0)", session)
    assert ok_exit["status"] == "ok"
    assert run_py(client_small, "print(v)", session)["stdout"] == "4\n"
