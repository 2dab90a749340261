"""A streaming client that goes away stops the program and frees its sandbox.

Checked on the backend: the executor alone notices (only it survives in the
sandbox before the sandbox is released), and through the API the local backend's
claimed count returns to zero with no process of the sandbox's uid left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from app.backends.local import LocalBackend
from app.cli_client import iter_sse
from app.executor import ExecutorResult, OutputChunk
from tests.conftest import RunningApp
from tests.security.sandbox_checks import processes_of_uid, wait_until_no_process_of

LONG_RUN = "id -u\necho ready\nsleep 3600\n"


def backend_of(api: RunningApp) -> LocalBackend:
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    return backend


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_executor_stops_the_program_when_its_client_leaves(api: RunningApp) -> None:
    backend = backend_of(api)

    async def scenario() -> tuple[int, list[str], float]:
        lease = await backend.acquire("bash", "s" * 21)
        try:
            stream = lease.executor.execute_stream(
                lang="bash", code=LONG_RUN, args=[], timeout=60, request_id="leave",
                transport_timeout=90)
            output = ""
            async with contextlib.aclosing(stream):
                async for event in stream:
                    assert isinstance(event, OutputChunk), event
                    output += event.text
                    if "ready" in output:
                        break
            uid = int(output.split()[0])
            left = time.monotonic()
            names = [p.name() for p in processes_of_uid(uid)]
            # Until only the executor is left (one listing is not atomic: a process
            # being reaped meanwhile can show up without its child).
            while names != ["python3"] and time.monotonic() - left < 10:
                await asyncio.sleep(0.05)
                names = [p.name() for p in processes_of_uid(uid)]
            return uid, names, time.monotonic() - left
        finally:
            await backend.release(lease)

    uid, names, seconds = api.run(scenario())
    # Before the sandbox was released, the executor had already killed the program.
    assert names == ["python3"], f"only the executor may remain, found {names}"
    assert seconds < 5
    assert wait_until_no_process_of(uid) == []


def test_a_disconnected_stream_frees_the_sandbox(api: RunningApp) -> None:
    backend = backend_of(api)
    assert _wait(lambda: backend.pool_counts()["bash"].claimed == 0)
    request_id = "Disconnect0123456789x"
    with api.client() as client, client.stream(
            "POST", "/exec/stream", json={"lang": "bash", "code": LONG_RUN, "timeout": 20},
            headers={"X-Request-ID": request_id}) as response:
        assert response.status_code == 200
        output = ""
        events = iter_sse(response.iter_lines())  # kept: closing it closes the connection
        for name, data in events:
            assert name == "stdout"
            output += json.loads(data)["text"]
            if "ready" in output:
                break
        uid = int(output.split()[0])
        assert backend.pool_counts()["bash"].claimed == 1
        assert _wait(lambda: any(p.name() == "sleep" for p in processes_of_uid(uid)))
    left = time.monotonic()  # the connection is closed here
    assert _wait(lambda: backend.pool_counts()["bash"].claimed == 0), "sandbox still claimed"
    assert wait_until_no_process_of(uid) == []
    assert time.monotonic() - left < 15, "stopped long before the 20 s timeout"
    recent = api.run(api.app.state.exec_service.recent.latest(50))
    assert [e["status"] for e in recent if e["request_id"] == request_id] == ["cancelled"]


def test_the_executor_result_closes_the_stream(api: RunningApp) -> None:
    """A finished stream ends with the result: nothing is left to read after it."""
    backend = backend_of(api)

    async def scenario() -> list[object]:
        lease = await backend.acquire("bash", "s" * 21)
        try:
            return [event async for event in lease.executor.execute_stream(
                lang="bash", code="echo one; echo two >&2", args=[], timeout=10,
                request_id="whole", transport_timeout=30)]
        finally:
            await backend.release(lease)

    events = api.run(scenario())
    assert isinstance(events[-1], ExecutorResult) and events[-1].status == "ok"
    assert [(e.stream, e.text) for e in events[:-1] if isinstance(e, OutputChunk)] == [
        ("stdout", "one\n"), ("stderr", "two\n")]


def test_a_sandbox_dying_mid_stream_ends_with_an_error_event(api: RunningApp) -> None:
    request_id = "DyingSandbox012345678"
    with api.client() as client, client.stream(
            "POST", "/exec/stream", json={"lang": "bash", "code": LONG_RUN, "timeout": 20},
            headers={"X-Request-ID": request_id}) as response:
        events = iter_sse(response.iter_lines())
        output = ""
        for name, data in events:
            assert name == "stdout"
            output += json.loads(data)["text"]
            if "ready" in output:
                break
        uid = int(output.split()[0])
        executor = [p for p in processes_of_uid(uid) if p.name() == "python3"]
        assert len(executor) == 1
        executor[0].kill()  # the sandbox's PID 1 dies: the sandbox is gone
        rest = [(name, json.loads(data)) for name, data in events]
    assert rest == [("error", {"error": "sandbox_failed", "message": rest[0][1]["message"]})]
    assert wait_until_no_process_of(uid) == []
    recent = api.run(api.app.state.exec_service.recent.latest(50))
    assert [e["status"] for e in recent if e["request_id"] == request_id] == ["sandbox_failed"]
