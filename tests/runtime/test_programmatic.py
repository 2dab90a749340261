"""Programmatic runs (``/exec/programmatic``) in a runtime session: the run goes on in
the kept sandbox across its rounds, holding the runtime session (another execution of it
waits, then 429), and leaves its workspace kept and checkpointed; a cancelled run's
sandbox is dropped and the next call restores the last checkpoint."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningApp

from .conftest import EXPECTED, kept_of, run, stateful_api_fixture

TOOLS = [{"name": "add", "parameters": {"type": "object"}}]


ptc_api = stateful_api_fixture(queue_timeout=2)


def _post(app: RunningApp, body: dict[str, Any], request_id: str | None = None,
          ) -> dict[str, Any]:
    headers = {EXPECTED: "stateful"}
    if request_id is not None:
        headers["X-LibreChat-Code-Request-ID"] = request_id
    with app.client() as http:
        response = http.post("/exec/programmatic", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _finish(app: RunningApp, paused: dict[str, Any], result: Any) -> dict[str, Any]:
    assert paused["status"] == "tool_call_required", paused
    return _post(app, {"continuation_token": paused["continuation_token"],
                       "tool_results": [{"call_id": paused["tool_calls"][0]["id"],
                                         "result": result}]})


def test_a_programmatic_run_goes_on_in_the_runtime_session(ptc_api: RunningApp) -> None:
    made = run(ptc_api, "ptc-conv", "open('/mnt/data/n.txt','w').write('5')")
    paused = _post(ptc_api, {"code": "n = int(open('/mnt/data/n.txt').read())\n"
                                     "total = await add(a=n, b=2)\n"
                                     "open('/mnt/data/total.txt','w').write(str(total))\n"
                                     "print(total)",
                             "tools": TOOLS, "runtime_session_hint": "ptc-conv"})
    # while it is paused the runtime session is its: another execution waits, then 429
    busy = run(ptc_api, "ptc-conv", "print(1)", expect=429)
    assert busy["error"] == "runtime_session_busy"
    done = _finish(ptc_api, paused, 7)
    assert (done["status"], done["stdout"]) == ("completed", "7\n"), done
    assert done["runtime_session_id"] == made["runtime_session_id"]
    assert done["runtime_status"] == "reused"
    assert [f["name"] for f in done["files"]] == ["total.txt"]  # only what changed
    after = run(ptc_api, "ptc-conv", "print(open('/mnt/data/total.txt').read())")
    assert (after["runtime_status"], after["stdout"]) == ("reused", "7\n")


def test_a_first_programmatic_run_creates_the_runtime_session(ptc_api: RunningApp) -> None:
    paused = _post(ptc_api, {"lang": "bash", "code": "x=$(add '{\"a\": 1, \"b\": 2}')\n"
                                                     "echo $x > /mnt/data/x.txt; echo $x",
                             "tools": TOOLS, "runtime_session_hint": "ptc-first"})
    done = _finish(ptc_api, paused, 3)
    assert (done["status"], done["runtime_status"]) == ("completed", "created"), done
    assert len(kept_of(ptc_api, done["runtime_session_id"])) == 1
    after = run(ptc_api, "ptc-first", "cat /mnt/data/x.txt", lang="bash")
    assert (after["runtime_status"], after["stdout"]) == ("reused", "3\n")


def test_a_cancelled_run_drops_its_sandbox_and_frees_the_runtime_session(
        ptc_api: RunningApp) -> None:
    made = run(ptc_api, "ptc-cancel", "open('/mnt/data/kept.txt','w').write('k')")
    paused = _post(ptc_api, {"code": "open('/mnt/data/half.txt','w').write('h')\n"
                                     "print(await add(a=1, b=1))",
                             "tools": TOOLS, "runtime_session_hint": "ptc-cancel"},
                   request_id="req-cancel-1")
    assert paused["status"] == "tool_call_required"
    with ptc_api.client() as http:
        cancelled = http.post("/exec/programmatic/cancel", json={"request_id": "req-cancel-1"},
                              headers={EXPECTED: "stateful"})
    assert cancelled.json() == {"cancelled": True}
    assert kept_of(ptc_api, made["runtime_session_id"]) == []
    after = run(ptc_api, "ptc-cancel", "import os\nprint(sorted(os.listdir('/mnt/data')))")
    assert after["runtime_status"] == "restored"
    assert after["stdout"] == "['kept.txt']\n"  # the cancelled run left nothing


def test_a_failed_programmatic_run_is_not_kept(ptc_api: RunningApp) -> None:
    """A run that ends by a limit (here its step's timeout) leaves no partial workspace:
    its sandbox is dropped, nothing is checkpointed, and the next call restores the last
    checkpoint (the half-written file, never delivered, does not become the baseline)."""
    made = run(ptc_api, "ptc-failed", "open('/mnt/data/kept.txt','w').write('k')")
    paused = _post(ptc_api, {"code": "await add(a=1, b=2)\n"
                                     "open('/mnt/data/half.txt','w').write('h')\n"
                                     "import time\ntime.sleep(60)",
                             "tools": TOOLS, "timeout": 3, "runtime_session_hint": "ptc-failed"})
    failed = _finish(ptc_api, paused, 3)
    assert failed["status"] == "error" and failed["error"] == "Time limit exceeded", failed
    assert failed["files"] == []
    after = run(ptc_api, "ptc-failed", "import os\nprint(sorted(os.listdir('/mnt/data')))")
    assert after["runtime_session_id"] == made["runtime_session_id"]
    assert (after["runtime_status"], after["stdout"]) == ("restored", "['kept.txt']\n"), after
