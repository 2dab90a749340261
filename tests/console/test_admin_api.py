"""The operator API and the console's static files, over real HTTP."""

from __future__ import annotations

import httpx

from app.domain.admin.service import summarize
from tests.conftest import OTHER_KEY, RunningApp
from tests.console.conftest import ADMIN_KEY


def test_admin_routes_refuse_other_keys(console_api: RunningApp) -> None:
    with console_api.client() as client:
        refused = client.get("/admin/overview")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    with console_api.client(key=None) as anonymous:
        assert anonymous.get("/admin/overview").status_code == 401


def test_overview_reports_pools_executions_and_sessions(console_api: RunningApp) -> None:
    with console_api.client() as client, console_api.client(OTHER_KEY) as other:
        ok = client.post("/exec", json={"lang": "bash", "code": "echo fine"}).json()
        failed = client.post("/exec", json={"lang": "bash", "code": "exit 3"}).json()
        assert (ok["status"], failed["status"]) == ("ok", "error")
        assert other.post("/exec", json={"lang": "bash", "code": "true"}).status_code == 200
    with console_api.client(ADMIN_KEY) as admin:
        overview = admin.get("/admin/overview", params={"limit": 500})
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert body["backend"]["name"] == "local" and body["backend"]["ok"] is True
    assert body["pools"]["bash"]["target"] == 1
    assert set(body["pools"]["py"]) == {"target", "warm", "starting", "claimed"}
    recent = {entry["session_id"]: entry for entry in body["executions"]["recent"]}
    assert recent[ok["session_id"]]["status"] == "ok"
    assert recent[failed["session_id"]]["status"] == "error"
    entry = recent[ok["session_id"]]
    assert entry["language"] == "bash" and entry["tenant"] == "default"
    assert entry["duration_ms"] > 0 and entry["wall_time"] is not None
    assert entry["streamed"] is False and isinstance(entry["pool_hit"], bool)
    summary = body["executions"]["summary"]
    assert summary["count"] == len(body["executions"]["recent"])
    assert summary["by_status"]["error"] >= 1 and 0 < summary["error_rate"] < 1
    assert summary["by_language"]["bash"]["errors"] >= 1
    sessions = body["sessions"]
    assert sessions["complete"] is True
    assert sessions["by_tenant"]["default"] >= 2 and sessions["by_tenant"]["other"] >= 1


def test_summary_of_recent_executions() -> None:
    entries = [{"status": "ok", "language": "py", "duration_ms": 10},
               {"status": "ok", "language": "py", "duration_ms": 30},
               {"status": "timeout", "language": "bash", "duration_ms": 1000},
               {"status": "sandbox_failed", "language": "bash", "duration_ms": 20}]
    summary = summarize(entries)
    assert summary["count"] == 4
    assert summary["error_rate"] == 0.5 and summary["service_error_rate"] == 0.25
    assert summary["duration_ms"] == {"median": 30.0, "p95": 1000.0, "max": 1000.0}
    assert summary["by_language"]["py"] == {"count": 2, "errors": 0, "error_rate": 0.0,
                                           "mean_ms": 20.0}
    assert summarize([])["error_rate"] == 0.0


def test_console_pages_are_public_and_the_api_is_not(console_api: RunningApp) -> None:
    base = console_api.base_url
    for path, kind in (("/console/", "text/html"), ("/console", "text/html"),
                       ("/console/operator", "text/html"), ("/console/console.js",
                                                            "text/javascript"),
                       ("/console/console.css", "text/css")):
        response = httpx.get(base + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert httpx.get(base + "/console/nothing-here.js").status_code == 404
    assert httpx.get(base + "/console/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert httpx.post(base + "/exec/stream", json={"lang": "py", "code": "1"}
                      ).status_code == 401
    assert httpx.get(base + "/files/" + "A" * 21).status_code == 401


def test_schema_documents_the_stream_and_hides_the_console(console_api: RunningApp) -> None:
    document = httpx.get(f"{console_api.base_url}/schema/openapi.json").json()
    assert not [path for path in document["paths"] if path.startswith("/console")]
    stream = document["paths"]["/exec/stream"]["post"]
    assert set(stream["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {"400", "401", "413", "415", "429", "503"} <= set(stream["responses"])
    assert "403" in document["paths"]["/admin/overview"]["get"]["responses"]
