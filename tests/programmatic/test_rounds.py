"""Programmatic tool calling on the local backend: rounds, parallel calls, tool errors,
timeouts, bash, and the request's own errors."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunningApp

from .helpers import TOOLS, drive, step


def calls_of(rounds: list[list[dict[str, Any]]]) -> list[list[tuple[str, Any]]]:
    return [[(call["name"], call["input"]) for call in calls] for calls in rounds]


def test_one_round(client: httpx.Client) -> None:
    answer, rounds = drive(client, {"code": "x = await add(a=3, b=7)\nprint('x =', x)"})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == "x = 10\n" and answer["error"] is None
    assert calls_of(rounds) == [[("add", {"a": 3, "b": 7})]]
    assert answer["session_id"] and answer["continuation_token"] is None


def test_two_sequential_rounds_keep_the_program_alive(client: httpx.Client) -> None:
    code = ("import os\npid = os.getpid()\nprint('start')\n"
            "x = await add(a=1, b=2)\n"
            "y = await mul(a=x, b=10)\n"
            "print(x, y, os.getpid() == pid)")
    answer, rounds = drive(client, {"code": code})
    assert answer["status"] == "completed", answer
    # the output of every step, and one process from start to end
    assert answer["stdout"] == "start\n3 30 True\n"
    assert calls_of(rounds) == [[("add", {"a": 1, "b": 2})], [("mul", {"a": 3, "b": 10})]]


def test_gather_makes_two_calls_in_one_round(client: httpx.Client) -> None:
    code = ("a, b = await asyncio.gather(add(a=1, b=1), mul(a=2, b=3))\n"
            "print(a, b)")
    answer, rounds = drive(client, {"code": code})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == "2 6\n"
    assert len(rounds) == 1
    assert sorted(calls_of(rounds)[0]) == [("add", {"a": 1, "b": 1}), ("mul", {"a": 2, "b": 3})]
    assert len({call["id"] for call in rounds[0]}) == 2


def test_is_error_raises_inside_the_code(client: httpx.Client) -> None:
    code = ("try:\n    await fail()\nexcept Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n"
            "print(await add(a=1, b=1))")
    answer, _ = drive(client, {"code": code})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == "ToolError the tool broke\n2\n"
    # uncaught, it ends the program like any exception: a traceback, the run completed
    answer, _ = drive(client, {"code": "await fail()\nprint('never')"})
    assert answer["status"] == "completed" and answer["stdout"] == ""
    assert "ToolError: the tool broke" in answer["stderr"]
    assert 'File "' in answer["stderr"] and "ptc_sandbox" not in answer["stderr"]


def test_timeout_caps_each_run_between_rounds(client: httpx.Client) -> None:
    # Two steps of ~1 s each under a 2.5 s timeout: more than 2.5 s in all, never in one.
    code = ("import time\ntime.sleep(1)\nx = await add(a=1, b=1)\ntime.sleep(1)\n"
            "print('done', x)")
    answer, rounds = drive(client, {"code": code, "timeout": 2500})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == "done 2\n" and len(rounds) == 1
    # A step longer than the timeout ends the run
    code = "x = await add(a=1, b=1)\nprint('slept?')\nimport time\ntime.sleep(30)"
    answer, rounds = drive(client, {"code": code, "timeout": 1500})
    assert answer["status"] == "error" and len(rounds) == 1
    assert answer["error"] == "Time limit exceeded"
    assert answer["stdout"] == "slept?\n"
    assert "Time limit exceeded after 1.5 s" in answer["stderr"]


def test_no_code_is_an_error_answer(client: httpx.Client) -> None:
    for code in ("", "   \n"):
        answer = step(client, {"code": code, "tools": TOOLS})
        assert answer["status"] == "error" and "no code" in answer["error"]


def test_requests_the_api_refuses(client: httpx.Client) -> None:
    def post(body: dict[str, object]) -> httpx.Response:
        return client.post("/exec/programmatic", json=body)

    assert post({"code": "1", "tools": TOOLS, "lang": "js"}).status_code == 400
    assert post({"code": "1", "tools": []}).status_code == 400
    assert post({"code": "1", "tools": [{"description": "no name"}]}).status_code == 400
    ambiguous = post({"code": "1", "tools": [{"name": "get-data"}, {"name": "get data"}]})
    assert ambiguous.status_code == 400 and "both become 'get_data'" in ambiguous.text
    assert post({"code": "1", "tools": [{"name": "x"}] * 129}).status_code == 400
    many = [{"name": f"tool_{i}"} for i in range(128)]
    answer, rounds = drive(client, {"code": "print(await tool_127())", "tools": many},
                           tools={"tool_127": lambda _: "the last one"})
    assert answer["stdout"] == "the last one\n" and rounds[0][0]["name"] == "tool_127"
    wrong_type = client.post("/exec/programmatic", content=b"code=1",
                             headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415


def test_tool_names_become_identifiers(client: httpx.Client) -> None:
    tools = [{"name": "get-weather"}, {"name": "class"}, {"name": "2fast"}]
    code = ("print(await get_weather(city='SF'), await class_tool(), await _2fast())")
    answer, rounds = drive(client, {"code": code, "tools": tools},
                           tools={"get-weather": lambda a: f"sunny in {a['city']}",
                                  "class": lambda a: "k", "2fast": lambda a: 2})
    assert answer["stdout"] == "sunny in SF k 2\n", answer
    assert [name for calls in rounds for name, _ in calls_of([calls])[0]] == [
        "get-weather", "class", "2fast"]


def test_results_are_decoded_values(client: httpx.Client) -> None:
    code = ("r = await add(a=1, b=1)\nj = await mul(a=1, b=1)\n"
            "print(type(r).__name__, r, type(j).__name__, j['k'])")
    answer, _ = drive(client, {"code": code},
                      tools={"add": lambda a: [1, 2], "mul": lambda a: '{"k": "v"}'})
    assert answer["stdout"] == "list [1, 2] dict v\n", answer


def test_bash_tools_are_functions(client: httpx.Client) -> None:
    code = ("x=$(add '{\"a\": 3, \"b\": 4}')\necho \"x=$x\"\n"
            "{ s=$(add '{\"a\":1,\"b\":1}'); echo \"s=$s\" > /tmp/s; } &\n"
            "{ m=$(mul '{\"a\":2,\"b\":3}'); echo \"m=$m\" > /tmp/m; } &\n"
            "wait\ncat /tmp/s /tmp/m\n"
            "fail '{}' || echo \"failed with $?\"")
    answer, rounds = drive(client, {"code": code, "lang": "bash"})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == "x=7\ns=2\nm=6\nfailed with 1\n"
    assert "the tool broke" in answer["stderr"]
    # A round ends when no call came for a moment (background jobs call when they run):
    # the two parallel calls make one round, or two on a busy machine.
    names = [sorted(str(call["name"]) for call in calls) for calls in rounds]
    assert names[0] == ["add"] and names[-1] == ["fail"]
    assert names[1:-1] in ([["add", "mul"]], [["add"], ["mul"]], [["mul"], ["add"]])


def test_documented_and_served_under_v1(api: RunningApp, client: httpx.Client) -> None:
    document = client.get("/schema/openapi.json").json()
    assert {"/exec/programmatic", "/exec/programmatic/cancel"} <= set(document["paths"])
    operation = document["paths"]["/exec/programmatic"]["post"]
    assert "tool_call_required" in operation["description"]
    answer = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS})
    done = client.post("/v1/exec/programmatic", json={
        "continuation_token": answer["continuation_token"],
        "tool_results": [{"call_id": answer["tool_calls"][0]["id"], "result": 2}]})
    assert done.status_code == 200 and done.json()["stdout"] == "2\n", api.base_url
