"""Execution profiles over real HTTP: the header on every exec answer, the refusals."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningApp

SERVED = "x-codeapi-execution-profile"
EXPECTED = "X-CodeAPI-Expected-Profile"
EXEC_ROUTES = ("/exec", "/v1/exec", "/exec/stream", "/v1/exec/stream", "/exec/programmatic",
               "/v1/exec/programmatic", "/exec/programmatic/cancel",
               "/v1/exec/programmatic/cancel")


@pytest.mark.parametrize("headers", [{}, {EXPECTED: "default"}])
@pytest.mark.parametrize("path", ["/exec", "/v1/exec"])
def test_default_is_served_and_said(client: httpx.Client, path: str,
                                    headers: dict[str, str]) -> None:
    response = client.post(path, json={"lang": "py", "code": "print(1)"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "1\n"
    assert response.headers[SERVED] == "default"


def test_programmatic_and_stream_answers_say_it(client: httpx.Client) -> None:
    done = client.post("/exec/programmatic", headers={EXPECTED: "default"}, json={
        "code": "print(await add(a=1, b=2))",
        "tools": [{"name": "add", "parameters": {"type": "object"}}]})
    assert done.status_code == 200 and done.json()["status"] == "tool_call_required"
    assert done.headers[SERVED] == "default"
    paused = done.json()
    finished = client.post("/exec/programmatic", headers={EXPECTED: "default"}, json={
        "continuation_token": paused["continuation_token"],
        "tool_results": [{"call_id": paused["tool_calls"][0]["id"], "result": 3}]})
    assert finished.json()["stdout"] == "3\n" and finished.headers[SERVED] == "default"
    with client.stream("POST", "/exec/stream", json={"lang": "bash", "code": "echo hi"},
                       headers={EXPECTED: "default"}) as stream:
        assert stream.status_code == 200
        assert stream.headers[SERVED] == "default"
        assert "event: result" in stream.read().decode()
    cancel = client.post("/exec/programmatic/cancel", json={"request_id": "nobody"})
    assert cancel.status_code == 200 and cancel.headers[SERVED] == "default"


def test_a_kept_alive_answer_says_it(client: httpx.Client) -> None:
    # Past the ~2 s after which the status goes out before the JSON (keep-alive spaces)
    response = client.post("/exec", json={"lang": "py",
                                          "code": "import time; time.sleep(2.5); print(2)"})
    assert response.status_code == 200 and response.json()["stdout"] == "2\n"
    assert response.headers[SERVED] == "default"


@pytest.mark.parametrize("path", EXEC_ROUTES)
def test_stateful_is_refused_with_the_clients_capability_code(client: httpx.Client,
                                                              path: str) -> None:
    response = client.post(path, json={"lang": "py", "code": "print(1)",
                                       "runtime_session_hint": "conversation-1"},
                           headers={EXPECTED: "stateful"})
    assert response.status_code == 409, response.text
    assert response.headers[SERVED] == "default"
    body = response.json()
    assert body == {"error": "execution_profile_mismatch", "message": body["message"],
                    "expected_profile": "stateful", "actual_profile": "default",
                    "available_profiles": ["default"]}
    assert "stateful" in body["message"]


def test_the_refusal_comes_before_anything_else(api: RunningApp) -> None:
    # No credentials, no JSON: the profile is checked first (it tells only what is served)
    with httpx.Client(base_url=api.base_url, timeout=60) as anonymous:
        response = anonymous.post("/exec", content=b"not json",
                                  headers={EXPECTED: "stateful",
                                           "Content-Type": "text/plain"})
    assert response.status_code == 409
    assert response.json()["error"] == "execution_profile_mismatch"


@pytest.mark.parametrize("value", ["aws", "Stateful", "", "default,stateful"])
def test_a_value_that_is_no_profile_is_400(client: httpx.Client, value: str) -> None:
    response = client.post("/exec", json={"lang": "py", "code": "print(1)"},
                           headers={EXPECTED: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_execution_profile"
    assert response.headers[SERVED] == "default"


def test_the_header_given_twice_is_400(client: httpx.Client) -> None:
    request = client.build_request("POST", "/exec", json={"lang": "py", "code": "print(1)"})
    request.headers = httpx.Headers([*request.headers.multi_items(), (EXPECTED, "default"),
                                     (EXPECTED, "default")])
    response = client.send(request)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_execution_profile"


def test_error_answers_of_the_exec_routes_say_it_too(api: RunningApp,
                                                     client: httpx.Client) -> None:
    bad = client.post("/exec", json={"lang": "cobol", "code": "x"})
    assert bad.status_code == 400 and bad.headers[SERVED] == "default"
    with httpx.Client(base_url=api.base_url, timeout=60) as anonymous:
        unauthorized = anonymous.post("/v1/exec", json={"lang": "py", "code": "print(1)"})
    assert unauthorized.status_code == 401 and unauthorized.headers[SERVED] == "default"
    missing = client.get("/exec")
    assert missing.status_code == 405 and missing.headers[SERVED] == "default"


def test_other_routes_do_not_take_part(client: httpx.Client) -> None:
    for path in ("/health", "/health/ready", "/files/aaaaaaaaaaaaaaaaaaaaa"):
        response = client.get(path, headers={EXPECTED: "stateful"})
        assert response.status_code == 200, (path, response.text)
        assert SERVED not in response.headers


def test_the_schema_documents_the_refusal(client: httpx.Client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    for path in ("/exec", "/exec/stream", "/exec/programmatic", "/exec/programmatic/cancel"):
        assert "409" in paths[path]["post"]["responses"], path
