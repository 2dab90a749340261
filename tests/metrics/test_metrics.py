"""``GET /metrics`` scraped after real executions and parsed with Prometheus's own text
parser; the request id is echoed by the executor and carried by the API's log records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.backends.local import LocalBackend
from app.ids import new_id
from app.metrics import PHASES, STATE_PHASES, Metrics, RequestIdFilter, lap, timed
from sidecar.contract import TOKEN_HEADER
from tests.conftest import RunningApp


def scrape(api: RunningApp) -> dict[str, list[Sample]]:
    response = httpx.get(f"{api.base_url}/metrics")  # no API key: scrapers carry none
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return {family.name: list(family.samples) for family in families}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_after_executions(api: RunningApp, client: httpx.Client) -> None:
    before = scrape(api)
    ok = client.post("/exec", json={"lang": "py", "code": "x = 41"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    again = client.post("/exec", json={"lang": "py", "code": "print(x + 1)",
                                       "session_id": ok.json()["session_id"]})
    assert again.json()["stdout"] == "42\n"  # the state was restored, then captured again
    failed = client.post("/exec", json={"lang": "py", "code": "raise SystemExit(3)"})
    assert failed.json()["status"] == "error"
    assert client.post("/exec", json={"lang": "cobol", "code": "x"}).status_code == 400
    after = scrape(api)

    runs = "k8si_executions_total"
    for status, count in (("ok", 1), ("error", 1)):
        grew = (value(after["k8si_executions"], runs, language="py", status=status)
                - value(before.get("k8si_executions", []), runs, language="py", status=status))
        assert grew >= count, status
    assert value(after["k8si_executions"], runs, status="bad_request") >= 1

    latency = after["k8si_execution_duration_seconds"]
    assert value(latency, "k8si_execution_duration_seconds_count", language="py") >= 2
    assert value(latency, "k8si_execution_duration_seconds_sum", language="py") > 0
    phases = {s.labels["phase"] for s in after["k8si_execution_phase_seconds"]
              if s.name.endswith("_count")}
    assert set(PHASES) | set(STATE_PHASES) <= phases
    restores = value(after["k8si_execution_phase_seconds"],
                     "k8si_execution_phase_seconds_count", phase="state_restore") - value(
        before.get("k8si_execution_phase_seconds", []), "k8si_execution_phase_seconds_count",
        phase="state_restore")
    assert restores == 1  # only the second call had a state to restore
    claims = after["k8si_pool_claims"]
    assert value(claims, "k8si_pool_claims_total", language="py") >= 2
    starts = after["k8si_sandbox_starts"]
    assert value(starts, "k8si_sandbox_starts_total", language="py", outcome="ok") >= 1
    assert value(after["k8si_sandbox_start_duration_seconds"],
                 "k8si_sandbox_start_duration_seconds_count", language="py") >= 1
    assert value(after["k8si_pool_sandboxes"], "k8si_pool_sandboxes", language="py",
                 state="target") == api.settings.pool_size("py")
    assert "k8si_executions_in_flight" in after and "k8si_active_sessions" in after
    # Aggregates only: nothing names a tenant, a session or a request.
    labels = {key for samples in after.values() for s in samples for key in s.labels}
    assert labels <= {"language", "status", "phase", "result", "outcome", "state", "le"}


def test_executor_echoes_the_request_id(api: RunningApp) -> None:
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    request_id = new_id()

    async def run() -> dict[str, Any]:
        lease = await backend.acquire("bash", "e" * 21)
        try:
            client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
                uds=lease.executor_address.removeprefix("unix:")), base_url="http://sandbox",
                headers={TOKEN_HEADER: lease.executor.token})  # the sandbox serves its API
            async with client:
                response = await client.post("/execute", json={
                    "lang": "bash", "code": "echo hi", "request_id": request_id})
            result: dict[str, Any] = orjson.loads(response.content)
            return result
        finally:
            await backend.release(lease)

    result = api.run(run())
    assert result["request_id"] == request_id and result["stdout"] == "hi\n"
    # and the API answers with the id it was given
    response = httpx.post(f"{api.base_url}/exec", headers={
        "X-API-Key": "test-key-0123456789", "X-Request-ID": request_id},
        json={"lang": "bash", "code": "true"}, timeout=60)
    assert response.headers["x-request-id"] == request_id


class _Service:
    def __init__(self) -> None:
        self.metrics = Metrics()

    @timed
    async def execute(self, fail: bool, request_id: str) -> Any:
        lap("prepare", language="py", session_id="s1")
        logging.getLogger("tests.metrics").warning("inside")
        lap("run", pool_hit=True)
        if fail:
            raise LookupError("no")
        return type("Result", (), {"status": "ok"})()


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_timer_and_request_id_in_log_records() -> None:
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.metrics")
    logger.addHandler(handler)
    service = _Service()
    try:
        asyncio.run(service.execute(False, request_id="rid-1"))
        with contextlib.suppress(LookupError):
            asyncio.run(service.execute(True, "rid-2"))
    finally:
        logger.removeHandler(handler)
    assert [getattr(r, "request_id", None) for r in records] == ["rid-1", "rid-2"]
    text = service.metrics.registry.get_sample_value
    assert text("k8si_executions_total", {"language": "py", "status": "ok"}) == 1
    assert text("k8si_executions_total", {"language": "py", "status": "LookupError"}) == 1
    assert text("k8si_pool_claims_total", {"language": "py", "result": "hit"}) == 2
    assert text("k8si_active_sessions", {}) == 0
    assert text("k8si_executions_in_flight", {}) == 0
