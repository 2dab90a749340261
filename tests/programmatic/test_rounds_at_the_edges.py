"""Rounds at their edges: a tool result of several MB reaches the program (a round's
results may be a file's contents: the route takes ``MAX_PROGRAMMATIC_BODY``, not the
code's limit), one past that is a 413; and a continued step whose bookkeeping fails
after its sandbox was resumed frees that sandbox (its token is used: nobody else would)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.backends.local import LocalBackend
from app.domain.programmatic.controller import MAX_PROGRAMMATIC_BODY
from app.domain.programmatic.store import RunStore
from app.errors import ServiceUnavailable
from tests.conftest import RunningApp

from .helpers import ENDPOINT, TOOLS, drive, step

MIB = 1024 * 1024


def test_a_result_of_several_mb_reaches_the_program(client: httpx.Client) -> None:
    big = "x" * (4 * MIB)
    answer, rounds = drive(client, {"code": "r = await add(a=1, b=2)\nprint(len(r))"},
                           tools={"add": lambda args: big})
    assert answer["status"] == "completed" and len(rounds) == 1, answer
    assert answer["stdout"] == f"{4 * MIB}\n"


def test_a_round_over_the_body_limit_is_a_413(client: httpx.Client) -> None:
    paused = step(client, {"tools": TOOLS, "code": "print(await add(a=1, b=2))"})
    call = paused["tool_calls"][0]
    body = {"continuation_token": paused["continuation_token"],
            "tool_results": [{"call_id": call["id"], "result": "x" * MAX_PROGRAMMATIC_BODY}]}
    response = client.post(ENDPOINT, json=body)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    # the run is still paused, and answered within the limit it completes
    done = step(client, {"continuation_token": paused["continuation_token"],
                         "tool_results": [{"call_id": call["id"], "result": 3}]})
    assert (done["status"], done["stdout"]) == ("completed", "3\n"), done


@pytest.fixture
def failing_pause(api: RunningApp) -> Iterator[list[bool]]:
    """Once armed (``[True]``), the run store's ``pause`` fails, like Valkey going away
    between a continued step's resume and its bookkeeping; restored afterwards."""
    runs: RunStore = api.app.state.programmatic_service.runs
    original, armed = runs.pause, [False]

    async def pause(tenant: str, run_id: str, cap: int, seconds: int) -> bool:
        if armed[0]:
            raise ServiceUnavailable("injected: Valkey went away", retry_after=1)
        return await original(tenant, run_id, cap, seconds)

    runs.pause = pause  # type: ignore[method-assign]
    try:
        yield armed
    finally:
        runs.pause = original  # type: ignore[method-assign]


def test_a_step_failing_after_its_resume_frees_the_sandbox(
        api: RunningApp, client: httpx.Client, failing_pause: list[bool]) -> None:
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    free = backend.free_slots
    paused = step(client, {"tools": TOOLS, "code": "print(await add(a=1, b=2))"})
    assert backend.free_slots == free - 1  # the paused run holds its sandbox
    failing_pause[0] = True
    body: dict[str, Any] = {"continuation_token": paused["continuation_token"],
                            "tool_results": [{"call_id": paused["tool_calls"][0]["id"],
                                              "result": 3}]}
    response = client.post(ENDPOINT, json=body)
    assert response.status_code == 503, response.text
    assert backend.free_slots == free, "the sandbox and its slot are given back"
