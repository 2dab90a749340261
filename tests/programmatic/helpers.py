"""Helpers of the programmatic tool-calling tests: post a step, drive a run to its end.

``drive`` plays the client: it runs each round's calls with plain Python functions
and answers them as LibreChat's client does (``{call_id, result, is_error,
error_message}``), until the run completes or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

ENDPOINT = "/exec/programmatic"

#: Tool definitions as the client sends them (name, description, JSON Schema).
TOOLS = [
    {"name": "add", "description": "Add two numbers",
     "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                     "b": {"type": "number"}}}},
    {"name": "mul", "description": "Multiply two numbers",
     "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                     "b": {"type": "number"}}}},
    {"name": "fail", "description": "Always fails", "parameters": {"type": "object"}},
]


def _fail(_: dict[str, Any]) -> Any:
    raise RuntimeError("the tool broke")


IMPLEMENTATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "add": lambda args: args["a"] + args["b"],
    "mul": lambda args: args["a"] * args["b"],
    "fail": _fail,
}


def step(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(ENDPOINT, json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def answer_calls(calls: list[dict[str, Any]],
                 tools: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
                 ) -> list[dict[str, Any]]:
    """The client's results for one round."""
    results = []
    for call in calls:
        try:
            value = (tools or IMPLEMENTATIONS)[call["name"]](call["input"])
            results.append({"call_id": call["id"], "result": value, "is_error": False})
        except Exception as exc:  # the tool failed: the code gets it raised
            results.append({"call_id": call["id"], "result": None, "is_error": True,
                            "error_message": str(exc)})
    return results


def drive(client: httpx.Client, body: dict[str, Any],
          tools: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
          ) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Run ``body`` to its end; the last answer and the calls of every round."""
    answer = step(client, {"tools": TOOLS, **body})
    rounds = []
    while answer["status"] == "tool_call_required":
        rounds.append(answer["tool_calls"])
        answer = step(client, {"continuation_token": answer["continuation_token"],
                               "tool_results": answer_calls(answer["tool_calls"], tools)})
    return answer, rounds
