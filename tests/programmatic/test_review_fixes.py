"""What the review of programmatic tool calling found, each shown fixed on real sandboxes
and the real Valkey: a paused program is frozen and counted against its tenant; a step
whose bookkeeping fails frees its sandbox; refused continuations and cancels free the
paused sandbox; a run's request id is forgotten when the run ends; tool inputs and
results that JSON cannot carry end the run (or the request) with a clear error."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.response import Stream

from app.backends import lease_for_run
from app.backends.kubernetes.client import KubeError
from app.backends.kubernetes.held import unavailable
from app.domain.exec import keepalive
from app.domain.programmatic.service import ProgrammaticService
from app.errors import ServiceUnavailable
from app.executor.programmatic import parse_step
from app.settings import ProgrammaticSettings, TenantLimits, TenantSettings
from sidecar.protocol import MAX_STEP_TIMEOUT, ProtocolError, parse_continue
from tests.conftest import RunningApp, make_settings, start_app, stop_app

from .helpers import TOOLS, answer_calls, drive, step
from .test_cancel import HEADER, counts, wait_for

PAUSE = 2.0


def service(api: RunningApp) -> ProgrammaticService:
    found: ProgrammaticService = api.app.state.programmatic_service
    return found


def run_id(api: RunningApp, answer: dict[str, Any], tenant: str = "default") -> str:
    return service(api).tokens.read(answer["continuation_token"], tenant).run_id


# -- a paused program is frozen ---------------------------------------------------------

FROZEN = """
import threading, time
stamps = []
def tick():
    while True:
        stamps.append(time.monotonic())
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
time.sleep(0.2)
x = await add(a=1, b=2)
time.sleep(0.2)
gaps = [b - a for a, b in zip(stamps, stamps[1:])]
print(x, round(max(gaps), 1))
"""


def test_a_paused_program_makes_no_progress(client: httpx.Client) -> None:
    import time
    answer = step(client, {"code": FROZEN, "tools": TOOLS})
    assert answer["status"] == "tool_call_required", answer
    time.sleep(PAUSE)
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": answer_calls(answer["tool_calls"])})
    assert done["status"] == "completed", done
    value, gap = done["stdout"].split()
    assert value == "3"
    # its thread stood still for the whole pause: one gap as long as the pause
    assert float(gap) >= PAUSE - 0.3, done["stdout"]


# -- paused runs count against the tenant ------------------------------------------------

@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                  valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(
        tmp_path_factory.mktemp("ptc-concurrency"), runtime_dir, valkey_url,
        tenants=TenantSettings(defaults=TenantLimits(executions_per_window=0,
                                                             concurrent_executions=1),
                               auth_failures_per_window=0),
        programmatic=ProgrammaticSettings(lease_seconds=30))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def test_a_tenant_at_its_concurrency_cannot_pause_more(one_at_a_time: RunningApp) -> None:
    code = {"code": "print(await add(a=1, b=1))", "tools": TOOLS}
    with one_at_a_time.client() as client:
        first = step(client, code)
        assert first["status"] == "tool_call_required", first
        second = step(client, code)
        assert second["status"] == "error" and "too many paused runs" in second["error"]
        wait_for(lambda: counts(one_at_a_time) == (0, 1))  # the refused run's sandbox went
        done = step(client, {"continuation_token": first["continuation_token"],
                             "tool_results": answer_calls(first["tool_calls"])})
        assert done["stdout"] == "2\n", "the paused run goes on (its slot is its own)"
        answer, rounds = drive(client, {"code": "print(await add(a=2, b=2))"})
        assert answer["stdout"] == "4\n" and len(rounds) == 1, "a pause is free again"


# -- Valkey failing at the start of a step frees the sandbox -----------------------------

def test_a_failed_request_record_releases_the_sandbox(
        api: RunningApp, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    idle = counts(api)
    calls: list[str] = []

    async def failing(*args: object, **kwargs: object) -> None:
        calls.append("remember_request")
        raise ServiceUnavailable("the session store is unavailable", retry_after=2)

    monkeypatch.setattr(service(api).runs, "remember_request", failing)
    response = client.post("/exec/programmatic", json={"code": "print(1)", "tools": TOOLS},
                           headers={HEADER: str(uuid.uuid4())})
    assert response.status_code == 503 and calls, response.text
    wait_for(lambda: counts(api) == idle)


# -- refused continuations free the paused sandbox ----------------------------------------

def test_a_continuation_refused_after_its_token_is_used_frees_the_sandbox(
        api: RunningApp, client: httpx.Client) -> None:
    runs = service(api).runs
    for refuse, reason in ((lambda run: runs.cancel(run, 60), "cancelled"),
                           (runs.end_run, "gone")):
        before = counts(api)
        answer = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS})
        assert counts(api)[1] == before[1] + 1
        api.run(refuse(run_id(api, answer)))  # as a cancel that did not get to free it
        refused = step(client, {"continuation_token": answer["continuation_token"],
                                "tool_results": answer_calls(answer["tool_calls"])})
        assert refused["status"] == "error" and reason in refused["error"], refused
        wait_for(lambda b=before: counts(api) == b)


@pytest.mark.parametrize("when", ["before its run started", "as it paused"])
def test_a_cancel_while_a_run_pauses_frees_its_sandbox(
        api: RunningApp, client: httpx.Client, monkeypatch: pytest.MonkeyPatch,
        when: str) -> None:
    """The cancel lands before the executor has the run (nothing there to stop yet), or
    between the hold and the request record of the pause (it found the run running, so
    it had no nonce to free the sandbox with): the run ends, its sandbox freed."""
    runs = service(api).runs
    original = runs.remember_request
    idle = counts(api)

    async def cancelled_meanwhile(tenant: str, request_id: str, record: Any,
                                  ttl: int) -> None:
        if (record.nonce is None) == (when == "before its run started"):
            await runs.cancel(record.run_id, 60)
        await original(tenant, request_id, record, ttl)

    monkeypatch.setattr(runs, "remember_request", cancelled_meanwhile)
    answer = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS},
                  **{HEADER: str(uuid.uuid4())})
    assert answer["status"] == "error" and "cancelled" in answer["error"], answer
    wait_for(lambda: counts(api) == idle)


def test_a_finished_run_is_no_longer_cancellable(client: httpx.Client) -> None:
    request_id = str(uuid.uuid4())
    answer = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS},
                  **{HEADER: request_id})
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": answer_calls(answer["tool_calls"])},
                **{HEADER: request_id})
    assert done["stdout"] == "2\n"
    cancelled = client.post("/exec/programmatic/cancel", json={"request_id": request_id})
    assert cancelled.json() == {"cancelled": False}


# -- what JSON cannot carry -----------------------------------------------------------

def test_tool_results_json_cannot_carry_are_a_400_and_the_run_stays_paused(
        client: httpx.Client) -> None:
    answer = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS})
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    calls = answer["tool_calls"]
    response = client.post("/exec/programmatic", json={
        "continuation_token": answer["continuation_token"],
        "tool_results": [{"call_id": calls[0]["id"], "result": deep}]})
    assert response.status_code == 400, response.text
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": answer_calls(calls)})
    assert done["stdout"] == "2\n", done


def test_an_input_json_cannot_carry_ends_the_run() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    outcome = parse_step({"status": "tool_call_required", "stdout": "", "stderr": "",
                          "wall_time": 0.0,
                          "tool_calls": [{"id": "call_x", "name": "add", "input": deep}]},
                         ["add"])
    assert outcome.result.status == "error" and not outcome.paused
    assert outcome.failure is not None and "cannot be passed on" in outcome.failure


# -- the small ones ---------------------------------------------------------------------

def test_a_late_keepalive_error_says_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service error after the whitespace began is the body: the contract's error."""
    monkeypatch.setattr(keepalive, "KEEPALIVE_AFTER", 0.0)

    async def run(claimed: Callable[[], None]) -> Any:
        claimed()
        await asyncio.sleep(0.05)
        raise ServiceUnavailable("gone", retry_after=1)

    async def body() -> bytes:
        response = await keepalive.answer_with_keepalive(run, interval=0.01, headers={})
        assert isinstance(response, Stream) and isinstance(response.iterator, AsyncIterator)
        return b"".join([chunk async for chunk in response.iterator if isinstance(chunk, bytes)])

    data = asyncio.run(body())
    assert data.startswith(b" ")
    answer = json.loads(data)
    assert (answer["status"], answer["error"], answer["stderr"]) == (
        "error", "service_unavailable", "gone"), answer


def test_continue_timeouts_are_bounded() -> None:
    assert parse_continue({"tool_results": [], "timeout": 1e12})[1] == MAX_STEP_TIMEOUT
    for bad in (float("inf"), float("nan"), 0, -1, True):
        with pytest.raises(ProtocolError):
            parse_continue(json.loads(json.dumps({"tool_results": [], "timeout": bad})))


def test_apiserver_words_stay_in_the_log() -> None:
    error = unavailable("resume", KubeError(403, "Forbidden", "secret internals"))
    assert error.message == "the Kubernetes API is unavailable"
    assert "secret internals" not in error.message


def test_a_run_is_published_with_its_lock_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel sees the run only once its first step holds the lock: it then ends that
    step (never a run nobody answers for)."""
    from types import SimpleNamespace

    from sidecar import ptc_session
    from sidecar.protocol import ExecuteRequest, ExecuteResult

    seen: list[object] = []

    class Lock:
        def __enter__(self) -> None:
            seen.append(programmatic.run)  # what a cancel could see as the lock is taken

        def __exit__(self, *exc: object) -> None:
            return None

    class Run:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.lock = Lock()

    runner = SimpleNamespace(
        language=SimpleNamespace(warm_interpreter=False, run=["bash", "{src}"]),
        write_source=lambda code: {"src": "/nonexistent"},
        spawn=lambda *args, **kwargs: object(),
        config=SimpleNamespace(max_output_bytes=1024))
    programmatic = ptc_session.Programmatic(runner)  # type: ignore[arg-type]
    monkeypatch.setattr(ptc_session, "ProgrammaticRun", Run)
    def first_step(run: object, timeout: float, results: object) -> ExecuteResult:
        seen.append(programmatic.run is run)
        return ExecuteResult()

    monkeypatch.setattr(programmatic, "_step", first_step)
    programmatic.start(ExecuteRequest(lang="bash", code="true", tools=("add",)))
    assert seen == [None, True], seen


def test_a_continued_step_is_leased_for_the_rest_of_the_run(
        api: RunningApp, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not just its timeout: the last step also stores the run's files (a first step's
    claim's lease, ``lease_for_run``); nor the run's whole maximum lifetime, which left a
    dead replica's sandbox held for half an hour."""
    backend = service(api).backend
    original, leases = backend.resume, []

    async def resume(location: str, session_id: str, tenant: str, seconds: float) -> Any:
        leases.append(seconds)
        return await original(location, session_id, tenant, seconds)

    monkeypatch.setattr(backend, "resume", resume)
    answer, rounds = drive(client, {"code": "print(await add(a=1, b=1))"})
    assert answer["stdout"] == "2\n" and len(rounds) == 1
    expected = lease_for_run(api.settings.default_execution_time, api.settings.compile_timeout)
    assert leases == [expected] and expected < api.settings.programmatic.max_lifetime
