"""Fixtures of the runtime-session tests: the API serving ``stateful`` (real Valkey, real
local sandboxes, the real local object store), with limits chosen per module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import RuntimeSessionSettings
from tests.conftest import API_KEY, RunningApp, make_settings, serving, start_app

EXPECTED = "X-CodeAPI-Expected-Profile"


#: Generous limits: nothing is released while a test runs.
GENEROUS = RuntimeSessionSettings(idle_ttl=600, max_age=3600, per_tenant=8, total=16)


def stateful_app(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path, valkey_url: str,
                 limits: RuntimeSessionSettings = GENEROUS, **overrides: Any,
                 ) -> tuple[RunningApp, Any, Any]:
    data = tmp_path_factory.mktemp("runtime")
    settings = make_settings(data, runtime_dir, valkey_url,
                             execution_profiles=("default", "stateful"),
                             runtime_sessions=limits, **overrides)
    return start_app(settings)


def stateful_api_fixture(limits: RuntimeSessionSettings = GENEROUS,
                         **overrides: Any) -> Callable[..., Iterator[RunningApp]]:
    """A module's fixture: the API serving ``stateful`` with these limits (and other
    settings), started once for the module (``name = stateful_api_fixture(...)``)."""

    @pytest.fixture(scope="module")
    def api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
            valkey_url: str) -> Iterator[RunningApp]:
        yield from serving(stateful_app(tmp_path_factory, runtime_dir, valkey_url, limits,
                                        **overrides))

    return api


stateful_api = stateful_api_fixture()


def run(app: RunningApp, hint: str | None, code: str, *, key: str = API_KEY,
        lang: str = "py", files: list[dict[str, Any]] | None = None,
        expect: int = 200) -> dict[str, Any]:
    """One ``stateful`` ``/exec`` (with ``hint``) over real HTTP; its JSON answer."""
    body: dict[str, Any] = {"lang": lang, "code": code}
    if hint is not None:
        body["runtime_session_hint"] = hint
    if files is not None:
        body["files"] = files
    with app.client(key) as http:
        response = http.post("/exec", json=body, headers={EXPECTED: "stateful"})
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    if expect == 200:
        assert response.headers["x-codeapi-execution-profile"] == "stateful"
    return answer


def kept(app: RunningApp, tenant: str | None = None) -> list[Any]:
    """The backend's kept sandboxes (of one tenant, or all)."""
    backend = app.app.state.backend
    result: list[Any] = app.run(backend.runtime_sandboxes(tenant))
    return result


def kept_of(app: RunningApp, runtime_session_id: str) -> list[Any]:
    return [info for info in kept(app) if info.key.runtime_session_id == runtime_session_id]


def drop(app: RunningApp, runtime_session_id: str) -> None:
    """Kill a runtime session's kept sandbox, as a reaper, an OOM or a lost node would."""
    for info in kept_of(app, runtime_session_id):
        assert app.run(app.app.state.backend.drop(info.location))


def wait_until_released(app: RunningApp, runtime_session_id: str, limit: float = 120) -> None:
    """Until the backend no longer keeps the runtime session's sandbox (its lease ended);
    bounded, never a timing assertion."""
    deadline = time.monotonic() + limit
    while kept_of(app, runtime_session_id):
        assert time.monotonic() < deadline, "the kept sandbox was never released"
        time.sleep(0.2)


def upload(app: RunningApp, name: str, data: bytes, *, key: str = API_KEY,
           read_only: bool = False) -> dict[str, Any]:
    """Upload one file (as LibreChat does) and return its ``files[]`` reference."""
    with app.client(key) as http:
        form = {"read_only": "true"} if read_only else {}
        response = http.post("/upload", files={"file": (name, data)}, data=form)
    assert response.status_code == 200, response.text
    answer = response.json()
    return {"id": answer["files"][0]["fileId"], "name": name,
            "storage_session_id": answer["session_id"]}

