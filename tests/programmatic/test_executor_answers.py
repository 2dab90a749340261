"""The API checks a programmatic step's answer from the executor (it comes from inside
a sandbox) before anything uses it; each limit is tried on both sides."""

from __future__ import annotations

from typing import Any

import pytest

from app.executor import ExecutorError
from app.executor.programmatic import parse_step
from sidecar.ptc_wire import MAX_CALL_BYTES, MAX_CALLS_PER_ROUND

TOOLS = ("add", "mul")


def paused(calls: list[Any]) -> dict[str, Any]:
    return {"status": "tool_call_required", "stdout": "", "stderr": "", "wall_time": 0.1,
            "tool_calls": calls}


def call(index: int = 0, name: str = "add", value: Any = 1) -> dict[str, Any]:
    return {"id": f"call_{index}", "name": name, "input": {"a": value}}


def test_a_pause_within_the_limits() -> None:
    step = parse_step(paused([call(i) for i in range(MAX_CALLS_PER_ROUND)]), TOOLS)
    assert step.paused and len(step.tool_calls) == MAX_CALLS_PER_ROUND
    big = parse_step(paused([call(value="x" * (MAX_CALL_BYTES - 20))]), TOOLS)
    assert big.tool_calls[0].input["a"].startswith("x")


@pytest.mark.parametrize("calls", [
    [],
    [call(i) for i in range(MAX_CALLS_PER_ROUND + 1)],
    [call(name="rm")],
    [{"id": "../etc", "name": "add", "input": {}}],
    [{"id": "call_1", "name": "add"}],
    [{**call(), "extra": 1}],
    [call(1), call(1)],
    [call(value="x" * MAX_CALL_BYTES)],
    "not a list",
])
def test_a_pause_out_of_contract_is_a_sandbox_failure(calls: Any) -> None:
    with pytest.raises(ExecutorError):
        parse_step(paused(calls), TOOLS)


def test_the_end_carries_the_executors_reason() -> None:
    step = parse_step({"status": "error", "stdout": "", "stderr": "", "wall_time": 1.0,
                       "exit_code": None, "signal": "SIGKILL", "ptc_failure": "Cancelled"},
                      TOOLS)
    assert not step.paused and step.failure == "Cancelled" and step.tool_calls == ()
    with pytest.raises(ExecutorError):
        parse_step(["not", "an", "object"], TOOLS)
