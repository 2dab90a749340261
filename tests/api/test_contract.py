"""/exec request handling, auth and health: what the API answers for bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import API_KEY, RunningApp


def test_health_needs_no_auth_and_makes_no_calls(api: RunningApp) -> None:
    with api.client(key=None) as anonymous:
        response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "version": "0.1.0"}


def test_ready_lists_languages_and_services(client: httpx.Client) -> None:
    for path in ("/health/ready", "/health/detailed"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "healthy"
        assert body["services"]["valkey"]["status"] == "healthy"
        assert body["services"]["backend"]["sandbox_tool"] == "nsjail"
        languages = body["services"]["languages"]
        assert set(languages["available"]) | set(languages["unavailable"]) == {
            "py", "js", "ts", "c", "cpp", "java", "php", "rs", "go", "d", "f90", "r", "bash"}


@pytest.mark.attack("protocol")
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"},
                                     {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_credentials_are_401(api: RunningApp,
                                               headers: dict[str, str]) -> None:
    with httpx.Client(base_url=api.base_url, headers=headers) as http:
        for method, path in (("GET", "/health/ready"), ("POST", "/exec")):
            response = http.request(method, path, json={"lang": "py", "code": "print(1)"})
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"


@pytest.mark.attack("protocol")
def test_bearer_key_works_and_ambiguous_credentials_are_400(api: RunningApp) -> None:
    with httpx.Client(base_url=api.base_url, timeout=60) as http:
        ok = http.post("/exec", headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"lang": "bash", "code": "echo hi"})
        assert ok.json()["stdout"] == "hi\n"
        both = http.post("/exec", headers={"Authorization": f"Bearer {API_KEY}",
                                           "X-API-Key": "another"},
                         json={"lang": "bash", "code": "echo hi"})
        assert both.status_code == 400


@pytest.mark.attack("protocol")
def test_unknown_language_lists_supported(client: httpx.Client) -> None:
    response = client.post("/exec", json={"lang": "cobol", "code": "x"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request"
    assert "py" in body["message"] and "bash" in body["message"]


@pytest.mark.attack("protocol")
@pytest.mark.parametrize("payload", [
    {"code": "print(1)"},
    {"lang": "py"},
    {"lang": 3, "code": "print(1)"},
    {"lang": "py", "code": ["print(1)"]},
    {"lang": "py", "code": "print(1)", "args": [1, 2]},
    {"lang": "py", "code": "print(1)", "timeout": "soon"},
    {"lang": "py", "code": "print(1)", "timeout": -5},
    {"lang": "py", "code": "print(1)", "entity_id": "has spaces!"},
    {"lang": "py", "code": "print(1)", "args": "unterminated 'quote"},
    {"lang": "py", "code": "print('\x00')"},
])
def test_malformed_requests_are_400_with_a_message(client: httpx.Client,
                                                   payload: dict[str, object]) -> None:
    response = client.post("/exec", json=payload)
    assert response.status_code == 400, response.text
    assert response.json()["message"]


@pytest.mark.attack("protocol")
def test_not_json_is_rejected(client: httpx.Client) -> None:
    response = client.post("/exec", content=b"{not json", headers={"Content-Type":
                                                                   "application/json"})
    assert response.status_code == 400


def test_unknown_fields_are_ignored(client: httpx.Client) -> None:
    body = client.post("/exec", json={"lang": "bash", "code": "echo ok", "tool_call_id": "x",
                                      "conversationId": 3}).json()
    assert body["stdout"] == "ok\n"


def test_args_as_a_string(client: httpx.Client) -> None:
    body = client.post("/exec", json={"lang": "bash", "code": 'printf "%s|" "$@"',
                                      "args": "one 'two three'"}).json()
    assert body["stdout"] == "one|two three|"


@pytest.mark.attack("protocol")
def test_code_size_limit_on_both_sides(api: RunningApp, client: httpx.Client) -> None:
    limit = api.settings.max_code_size
    filler = "#" * (limit - len("print(1)\n") - 1) + "\n"
    at_limit = client.post("/exec", json={"lang": "py", "code": "print(1)\n" + filler})
    assert at_limit.status_code == 200 and at_limit.json()["stdout"] == "1\n"
    over = client.post("/exec", json={"lang": "py", "code": "print(1)\n" + filler + "#"})
    assert over.status_code == 413
    assert over.json()["error"] == "payload_too_large"
    huge = client.post("/exec", json={"lang": "py", "code": "#" * (limit * 3)})
    assert huge.status_code == 413


def test_sessions_are_created_and_continued(client: httpx.Client) -> None:
    first = client.post("/exec", json={"lang": "bash", "code": "echo 1"}).json()
    session = first["session_id"]
    again = client.post("/exec", json={"lang": "bash", "code": "echo 2",
                                       "session_id": session}).json()
    assert again["session_id"] == session
    unknown = client.post("/exec", json={"lang": "bash", "code": "echo 3",
                                         "session_id": "A" * 21}).json()
    assert unknown["session_id"] not in (session, "A" * 21)
    bad_shape = client.post("/exec", json={"lang": "bash", "code": "echo 4",
                                           "session_id": "../../etc"}).json()
    assert len(bad_shape["session_id"]) == 21


def test_entity_id_reuses_the_latest_session(client: httpx.Client) -> None:
    request = {"lang": "bash", "code": "echo x", "user_id": "u1", "entity_id": "agent_1"}
    first = client.post("/exec", json=request).json()["session_id"]
    second = client.post("/exec", json=request).json()["session_id"]
    other_user = client.post("/exec", json={**request, "user_id": "u2"}).json()["session_id"]
    assert first == second
    assert other_user != first


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.post("/exec", json={"lang": "bash", "code": "true"},
                           headers={"X-Request-ID": "R" * 21})
    assert response.headers["X-Request-ID"] == "R" * 21
