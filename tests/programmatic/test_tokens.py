"""Continuation tokens: single use, bound to their tenant, signed, ended by the lease;
and the rounds cap."""

from __future__ import annotations

import time

import httpx

from tests.conftest import OTHER_KEY, RunningApp

from .conftest import LEASE, ROUNDS
from .helpers import TOOLS, answer_calls, drive, step

CODE = "x = await add(a=1, b=2)\nprint(x)"


def paused(client: httpx.Client, code: str = CODE) -> dict[str, object]:
    answer = step(client, {"code": code, "tools": TOOLS})
    assert answer["status"] == "tool_call_required", answer
    return answer


def continuation(answer: dict[str, object]) -> dict[str, object]:
    calls = answer["tool_calls"]
    assert isinstance(calls, list)
    return {"continuation_token": answer["continuation_token"],
            "tool_results": answer_calls(calls)}


def test_a_token_is_used_once(client: httpx.Client) -> None:
    answer = paused(client)
    body = continuation(answer)
    first = step(client, body)
    assert first["status"] == "completed" and first["stdout"] == "3\n"
    again = step(client, body)
    assert again["status"] == "error" and "already used" in again["error"]
    assert again["stdout"] == "" and again["tool_calls"] == []


def test_another_tenants_token_is_unknown(api: RunningApp, client: httpx.Client) -> None:
    answer = paused(client)
    with api.client(OTHER_KEY) as other:
        refused = step(other, continuation(answer))
    assert refused == {**refused, "status": "error", "error": "unknown continuation token",
                       "session_id": None}
    # the owner's token was not spent by the other tenant's attempt
    done = step(client, continuation(answer))
    assert done["status"] == "completed" and done["stdout"] == "3\n"


def test_a_changed_token_is_unknown(client: httpx.Client) -> None:
    answer = paused(client)
    token = str(answer["continuation_token"])
    prefix, payload, mac = token.split(".")
    for forged in (f"{prefix}.{payload[:-2]}AA.{mac}", f"{prefix}.{payload}.{mac[:-2]}AA",
                   "k8si-ptc1.e30.AAAA", "nonsense", "a" * 5000,
                   f"{prefix}.{payload}.{mac[:-1]}é", f"{prefix}.{payload}é.{mac}"):
        refused = step(client, {**continuation(answer), "continuation_token": forged})
        assert refused["status"] == "error" and refused["error"] == "unknown continuation token"
    assert step(client, continuation(answer))["status"] == "completed"


def test_an_expired_lease_reaps_the_paused_sandbox(short_api: RunningApp) -> None:
    backend = short_api.app.state.backend
    with short_api.client() as client:
        # within the lease: continued
        assert step(client, continuation(paused(client)))["status"] == "completed"
        answer = paused(client)
        [sandbox] = backend.paused()
        assert sandbox.alive
        assert short_api.run(backend.health())["paused"] == 1
        deadline = time.monotonic() + LEASE + 30
        while short_api.run(backend.health())["paused"] and time.monotonic() < deadline:
            time.sleep(0.2)
        health = short_api.run(backend.health())
        assert health["paused"] == 0 and health["claimed"] == 0
        while sandbox.alive and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not sandbox.alive, "the reaped sandbox's processes are gone"
        refused = step(client, continuation(answer))
        assert refused["status"] == "error" and "expired" in refused["error"]
        # the slot it held is free again: a new run gets a sandbox
        assert step(client, continuation(paused(client)))["status"] == "completed"


def test_rounds_are_capped(short_api: RunningApp) -> None:
    def code(rounds: int) -> str:
        return f"for i in range({rounds}):\n    await add(a=i, b=0)\nprint('done')"

    with short_api.client() as client:
        answer, rounds = drive(client, {"code": code(ROUNDS)})
        assert answer["status"] == "completed" and len(rounds) == ROUNDS
        answer, rounds = drive(client, {"code": code(ROUNDS + 1)})
        assert answer["status"] == "error" and len(rounds) == ROUNDS
        assert f"More than {ROUNDS} rounds" in answer["error"]
        assert short_api.run(short_api.app.state.backend.health())["paused"] == 0
