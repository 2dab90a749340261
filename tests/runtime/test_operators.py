"""Operators see runtime sessions and can end one: ``GET``/``DELETE
/admin/runtime-sessions`` (admin keys only) and ``k8si runtime-sessions list|end``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import API_KEY, REPO, RunningApp

from .conftest import kept_of, run, stateful_api_fixture

ADMIN_KEY = "admin-key-runtime-0123456789"


admin_api = stateful_api_fixture(admin_api_keys=(ADMIN_KEY,))


def _k8si(app: RunningApp, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SI_URL": app.base_url, "K8SI_API_KEY": ADMIN_KEY}
    return subprocess.run([sys.executable, "-m", "app", "runtime-sessions", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_operators_list_and_end_runtime_sessions(admin_api: RunningApp) -> None:
    made = run(admin_api, "ops-conv", "open('/mnt/data/w.bin','wb').write(b'x' * 1000)")
    runtime_id = made["runtime_session_id"]
    with admin_api.client(API_KEY) as http:  # not an admin key
        assert http.get("/admin/runtime-sessions").status_code == 403
    with admin_api.client(ADMIN_KEY) as admin:
        rows = admin.get("/admin/runtime-sessions", params={"tenant": "default"}).json()
        row = next(r for r in rows if r["runtime_session_id"] == runtime_id)
        assert (row["tenant"], row["hint"], row["language"]) == ("default", "ops-conv", "py")
        assert row["kept"] is True and row["workspace_bytes"] == 1000
        assert row["checkpoint_generation"] == 1 and row["age_seconds"] >= 0
        assert admin.get("/admin/runtime-sessions", params={"tenant": "nobody"}).json() == []
        assert admin.delete("/admin/runtime-sessions/not-an-id").status_code == 400
        assert admin.delete("/admin/runtime-sessions/" + "A" * 21).status_code == 404

    listed = _k8si(admin_api, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert runtime_id in {r["runtime_session_id"] for r in json.loads(listed.stdout)}
    table = _k8si(admin_api, "list")
    assert table.returncode == 0 and "ops-conv" in table.stdout
    assert _k8si(admin_api, "end").returncode == 2  # no id

    ended = _k8si(admin_api, "end", runtime_id)
    assert ended.returncode == 0, ended.stderr
    assert kept_of(admin_api, runtime_id) == []
    again = run(admin_api, "ops-conv", "import os\nprint(os.listdir('/mnt/data'))")
    assert again["runtime_status"] == "created" and again["stdout"] == "[]\n"
    assert again["runtime_session_id"] != runtime_id
    assert _k8si(admin_api, "end", runtime_id).returncode == 2  # gone: a 404
