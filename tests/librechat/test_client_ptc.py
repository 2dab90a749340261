"""The real ``@librechat/agents`` programmatic tool calling against our server.

``scripts/ptc.mjs`` drives the package's exported ``createProgrammaticToolCallingTool``
(and ``createBashProgrammaticToolCallingTool``): the tool's ``invoke`` is the lowest
exported function that makes the HTTP calls. Its own ``makeRequest`` POSTs
``/exec/programmatic``, answers each ``tool_call_required`` round by running the
script's tools through the package's ``executeTools``, and POSTs
``/exec/programmatic/cancel`` when the run is aborted.
"""

from __future__ import annotations

import time
from typing import Any

import valkey

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient


def run(librechat: LibreChatClient, api: RunningApp, code: str, **payload: Any) -> Any:
    args = {"code": code, **payload.pop("args", {})}
    return librechat.run("ptc", base_url=api.base_url, api_key=API_KEY, args=args, **payload)


def test_one_round(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = run(librechat, api, "x = await add(a=3, b=7)\nprint('x =', x)")
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\nx = 10")
    assert answer["calls"] == [{"name": "add", "input": {"a": 3, "b": 7}}]
    assert answer["artifact"]["session_id"]


def test_two_sequential_rounds(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = run(librechat, api, "x = await add(a=1, b=2)\ny = await mul(a=x, b=10)\n"
                                 "print(x, y)")
    assert answer["ok"] and answer["content"].startswith("stdout:\n3 30"), answer
    assert [call["name"] for call in answer["calls"]] == ["add", "mul"]


def test_two_parallel_calls_in_one_round(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = run(librechat, api, "sf, ny = await asyncio.gather(add(a=1, b=1), "
                                 "mul(a=2, b=3))\nprint(f'SF: {sf}, NY: {ny}')")
    assert answer["ok"] and answer["content"].startswith("stdout:\nSF: 2, NY: 6"), answer
    assert sorted(call["name"] for call in answer["calls"]) == ["add", "mul"]


def test_an_is_error_result_raises_in_the_code(api: RunningApp,
                                               librechat: LibreChatClient) -> None:
    answer = run(librechat, api, "try:\n    await fail()\nexcept Exception as exc:\n"
                                 "    print('caught:', exc)")
    assert answer["ok"] and answer["content"].startswith("stdout:\ncaught: the tool broke"), \
        answer


def test_a_timeout(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = run(librechat, api, "x = await add(a=1, b=1)\nimport time\ntime.sleep(30)",
                 args={"timeout": 1000})
    assert not answer["ok"], answer
    # the client's own words for "Time limit exceeded", then our stderr line
    assert "Code execution failed. Execution exceeded the time limit." in answer["error"]
    assert "Time limit exceeded after 1 s" in answer["error"]


def test_a_cancel(api: RunningApp, librechat: LibreChatClient, valkey_url: str) -> None:
    store = valkey.Valkey.from_url(valkey_url)
    before = set(store.scan_iter("k8si:ptc:cancelled:*"))
    idle = api.run(api.app.state.backend.health())["claimed"]
    # Aborted while the step runs and before its answer began (a step that runs longer
    # gets its 200 early, with keep-alive spaces: an abort then closes the connection,
    # which stops the run too).
    answer = run(librechat, api, "import time\ntime.sleep(19)\nx = await add(a=1, b=1)\n"
                                 "print('finished')",
                 args={"timeout": 20000}, abortAfterMs=1000)
    assert not answer["ok"] and "abort" in answer["error"].lower(), answer
    assert answer["calls"] == []
    # the cancel named the run of the aborted request, and its sandbox is freed
    assert len(set(store.scan_iter("k8si:ptc:cancelled:*")) - before) == 1
    deadline = time.monotonic() + 30
    while api.run(api.app.state.backend.health())["claimed"] > idle \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.run(api.app.state.backend.health())["claimed"] == idle


def test_the_bash_variant(api: RunningApp, librechat: LibreChatClient) -> None:
    code = ("x=$(add '{\"a\": 2, \"b\": 3}')\n"
            "{ s=$(add '{\"a\":1,\"b\":1}'); printf '%s\\n' \"$s\" > /tmp/s; } &\n"
            "{ m=$(mul '{\"a\":2,\"b\":3}'); printf '%s\\n' \"$m\" > /tmp/m; } &\n"
            "wait\necho \"x=$x s=$(cat /tmp/s) m=$(cat /tmp/m)\"")
    answer = run(librechat, api, code, bash=True)
    assert answer["ok"] and answer["content"].startswith("stdout:\nx=5 s=2 m=6"), answer
    assert sorted(call["name"] for call in answer["calls"]) == ["add", "add", "mul"]


def test_an_abort_after_the_answer_began(api: RunningApp, librechat: LibreChatClient) -> None:
    """A long step's 200 goes out early (keep-alive spaces): the client's abort then
    closes the connection instead of calling cancel, and that stops the run too (were it
    not stopped, it would pause at its tool call and be counted as paused)."""
    health = api.app.state.backend.health
    idle, paused = api.run(health())["claimed"], api.run(health())["paused"]
    answer = run(librechat, api, "import time\ntime.sleep(15)\nx = await add(a=1, b=1)",
                 args={"timeout": 20000}, abortAfterMs=3500)
    assert not answer["ok"] and "abort" in answer["error"].lower(), answer
    deadline = time.monotonic() + 60
    while api.run(health())["claimed"] > idle and time.monotonic() < deadline:
        time.sleep(0.1)
    after = api.run(health())
    assert after["claimed"] == idle and after["paused"] == paused
