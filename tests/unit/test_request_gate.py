"""The auth middleware's admission is wired explicitly: before the lifespan attaches it
(or after shutdown detaches it) a request is refused with a 503, never let through
unchecked; attached, the same request is authenticated and admitted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from app.admission import Admission
from app.auth import Authenticator, AuthMiddleware, KeyRing, RequestGate
from app.errors import exception_handlers
from app.settings import Settings
from app.tenants import KeyStore
from app.valkey import connect

KEY = "gate-test-key-0123456789"
_RAN: list[str] = []


@get("/exec/ping", sync_to_thread=False)
def ping(request: Request[Any, Any, Any]) -> dict[str, str]:
    _RAN.append(request.user.tenant)
    return {"tenant": request.user.tenant}


def _client(gate: RequestGate) -> TestClient[Litestar]:
    authenticator = Authenticator(KeyRing((KEY,), ()), None, body_key=False)
    app = Litestar(route_handlers=[ping], middleware=[AuthMiddleware(authenticator, gate)],
                   exception_handlers=exception_handlers)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture
def attached(valkey_url: str) -> Iterator[RequestGate]:
    gate = RequestGate()
    client = connect(valkey_url)
    gate.attach(Admission(client, Settings(rate_limit_tenant=0, rate_limit_key=0), lease=60),
                KeyStore(client))
    yield gate


def test_a_request_before_the_gate_is_attached_is_refused_not_let_through() -> None:
    _RAN.clear()
    with _client(RequestGate()) as client:
        response = client.get("/exec/ping", headers={"X-API-Key": KEY})
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"
    assert _RAN == []


def test_an_attached_gate_admits_and_a_detached_one_refuses_again(
        attached: RequestGate) -> None:
    _RAN.clear()
    with _client(attached) as client:
        assert client.get("/exec/ping", headers={"X-API-Key": KEY}).json() == {
            "tenant": "default"}
        assert client.get("/exec/ping", headers={"X-API-Key": "wrong"}).status_code == 401
        attached.detach()
        assert client.get("/exec/ping", headers={"X-API-Key": KEY}).status_code == 503
    assert _RAN == ["default"]
