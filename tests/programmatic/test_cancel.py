"""``POST /exec/programmatic/cancel``: a paused run and a running one are stopped by the
client's request id (header or body, as the LibreChat client sends it)."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import httpx

from tests.conftest import OTHER_KEY, RunningApp

from .helpers import TOOLS, answer_calls, step

HEADER = "X-LibreChat-Code-Request-ID"


def counts(api: RunningApp) -> tuple[int, int]:
    health = api.run(api.app.state.backend.health())
    return health["claimed"], health["paused"]


def wait_for(condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "condition not met in time"  # type: ignore[operator]


def test_cancel_a_paused_run(api: RunningApp, client: httpx.Client) -> None:
    request_id = str(uuid.uuid4())
    answer = step(client, {"code": "x = await add(a=1, b=1)\nprint(x)", "tools": TOOLS},
                  **{HEADER: request_id})
    assert answer["status"] == "tool_call_required"
    before = counts(api)
    assert before[1] >= 1
    # another tenant cannot see or stop it
    with api.client(OTHER_KEY) as other:
        assert other.post("/exec/programmatic/cancel",
                          json={"request_id": request_id}).json() == {"cancelled": False}
    assert counts(api) == before
    cancelled = client.post("/exec/programmatic/cancel", json={"request_id": request_id})
    assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": True}
    assert counts(api)[1] == before[1] - 1, "the paused sandbox is gone"
    refused = step(client, {"continuation_token": answer["continuation_token"],
                            "tool_results": answer_calls(answer["tool_calls"])})
    assert refused["status"] == "error" and "cancelled" in refused["error"]


def test_cancel_a_running_run(api: RunningApp, client: httpx.Client) -> None:
    request_id = str(uuid.uuid4())
    code = ("import time, pathlib\nfor i in range(200):\n    time.sleep(0.1)\n"
            "pathlib.Path('/mnt/data/finished.txt').write_text('no')\nprint('finished')")
    idle = counts(api)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(step, client, {"code": code, "tools": TOOLS, "timeout": 19000},
                              **{HEADER: request_id})
        wait_for(lambda: counts(api)[0] > idle[0])  # its sandbox is claimed: it runs
        time.sleep(0.5)
        with api.client() as other_connection:
            cancelled = other_connection.post("/exec/programmatic/cancel",
                                              headers={HEADER: request_id})
        assert cancelled.json() == {"cancelled": True}
        answer = running.result(timeout=60)
    assert answer["status"] == "error" and answer["error"] == "Cancelled"
    assert "finished" not in answer["stdout"] and answer["files"] == []
    wait_for(lambda: counts(api) == idle)
    listed = client.get(f"/files/{answer['session_id']}").json()
    assert listed == []


def test_cancel_takes_the_id_from_the_body_or_the_header(client: httpx.Client) -> None:
    for kwargs in ({"json": {"request_id": "nobody-1"}},
                   {"headers": {HEADER: "nobody-2"}}):
        response = client.post("/exec/programmatic/cancel", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        assert response.json() == {"cancelled": False}
    for bad in ({}, {"request_id": "../x"}, {"request_id": "x" * 129}):
        assert client.post("/exec/programmatic/cancel", json=bad).status_code == 400
    assert client.post("/exec/programmatic/cancel",
                       json={"request_id": "x" * 128}).json() == {"cancelled": False}


def test_a_cancel_that_overtakes_its_request_stops_it(api: RunningApp,
                                                      client: httpx.Client) -> None:
    """The cancel arrives first (the request was still queued for a sandbox, or staging
    its files): nothing is known by that id yet, but the step, once it gets there, ends
    the run before it starts, and its sandbox is freed; another request id is untouched."""
    request_id = str(uuid.uuid4())
    early = client.post("/exec/programmatic/cancel", json={"request_id": request_id})
    assert early.status_code == 200 and early.json() == {"cancelled": False}
    idle = counts(api)
    answer = step(client, {"code": "open('/mnt/data/ran.txt', 'w').write('no')\n"
                                   "print(await add(a=1, b=1))", "tools": TOOLS},
                  **{HEADER: request_id})
    assert answer["status"] == "error" and "cancelled" in answer["error"], answer
    assert answer["stdout"] == "" and answer["files"] == []
    wait_for(lambda: counts(api) == idle)  # nothing claimed, nothing paused
    # another request of the same client runs as usual
    other = step(client, {"code": "print(await add(a=1, b=1))", "tools": TOOLS},
                 **{HEADER: str(uuid.uuid4())})
    assert other["status"] == "tool_call_required", other
    done = step(client, {"continuation_token": other["continuation_token"],
                         "tool_results": answer_calls(other["tool_calls"])})
    assert (done["status"], done["stdout"]) == ("completed", "2\n"), done
