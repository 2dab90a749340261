"""``POST /exec/stream`` on the local backend: event order, live output, caps, errors."""

from __future__ import annotations

import httpx
import pytest

from app.domain.exec.streaming import CUT_MARKER
from tests.conftest import RunningApp
from tests.stream.helpers import stream_exec

INTERLEAVED = """
import sys, time
for i in range(3):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
    time.sleep(0.05)
"""


def test_chunks_then_one_result_equal_to_exec(api: RunningApp, client: httpx.Client) -> None:
    streamed = stream_exec(client, {"lang": "py", "code": INTERLEAVED})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert len(streamed.headers["x-request-id"]) == 21
    names = [e.name for e in streamed.events]
    assert names[-1] == "result" and names.count("result") == 1
    assert set(names[:-1]) == {"stdout", "stderr"}
    result = streamed.result
    assert result["status"] == "ok" and result["code"] == 0
    assert streamed.text("stdout") == result["stdout"] == "out 0\nout 1\nout 2\n"
    assert streamed.text("stderr") == result["stderr"] == "err 0\nerr 1\nerr 2\n"
    # the order the program wrote in is kept across the two streams
    chunks = [e.data["text"] for e in streamed.events[:-1]]
    assert "".join(chunks).index("out 1") > "".join(chunks).index("err 0")
    plain = client.post("/exec", json={"lang": "py", "code": INTERLEAVED}).json()
    assert set(result) == set(plain), "the result event is the /exec response"


def test_output_arrives_while_the_program_runs(client: httpx.Client) -> None:
    code = 'for i in 1 2 3; do echo "tick $i"; sleep 1; done\n'
    streamed = stream_exec(client, {"lang": "bash", "code": code})
    ticks = [e for e in streamed.events if e.name == "stdout"]
    assert streamed.text("stdout") == "tick 1\ntick 2\ntick 3\n"
    assert len(ticks) >= 3, "each line is its own chunk"
    finished = streamed.events[-1].at
    assert ticks[0].at < finished - 1.5, (ticks[0].at, finished)


def test_a_character_split_across_reads_arrives_whole(client: httpx.Client) -> None:
    code = ("import sys, time\nout = sys.stdout.buffer\n"
            "out.write(b'caf\\xc3'); out.flush(); time.sleep(0.4)\n"
            "out.write(b'\\xa9 \\xe2\\x82'); out.flush(); time.sleep(0.4)\n"
            "out.write(b'\\xac\\n'); out.flush()\n")
    streamed = stream_exec(client, {"lang": "py", "code": code})
    assert len([e for e in streamed.events if e.name == "stdout"]) >= 2
    assert streamed.text("stdout") == "café €\n" == streamed.result["stdout"]
    assert "\ufffd" not in streamed.text("stdout")


def test_streamed_output_is_capped_like_the_response(api: RunningApp,
                                                     client: httpx.Client) -> None:
    limit = api.settings.response_output_limit
    code = "import sys\nfor _ in range(40):\n    sys.stdout.write('x' * 5000 + '\\n')\n"
    streamed = stream_exec(client, {"lang": "py", "code": code})
    text = streamed.text("stdout")
    assert text.endswith(CUT_MARKER)
    assert len(text.encode()) == limit + len(CUT_MARKER)
    result = streamed.result
    assert result["status"] == "ok"
    assert "[output truncated: " in result["stdout"]
    assert result["stdout"].startswith(text[:limit])


def test_output_that_fills_the_cap_exactly_then_more_shows_the_marker(
        api: RunningApp, client: httpx.Client) -> None:
    limit = api.settings.response_output_limit
    code = (f"import sys, time\nsys.stdout.write('x' * {limit})\nsys.stdout.flush()\n"
            "time.sleep(0.5)\nprint('more')\n")
    streamed = stream_exec(client, {"lang": "py", "code": code})
    text = streamed.text("stdout")
    assert text == "x" * limit + CUT_MARKER  # the marker, though no chunk crossed the cap
    assert "[output truncated: " in streamed.result["stdout"]


def test_output_exactly_at_the_cap_is_not_marked(api: RunningApp,
                                                 client: httpx.Client) -> None:
    limit = api.settings.response_output_limit
    code = f"import sys\nsys.stdout.write('x' * {limit})\n"
    streamed = stream_exec(client, {"lang": "py", "code": code})
    assert streamed.text("stdout") == "x" * limit == streamed.result["stdout"]


def test_the_sandbox_cap_stops_a_flood(api: RunningApp, client: httpx.Client) -> None:
    streamed = stream_exec(client, {"lang": "bash", "code": "yes"})
    result = streamed.result
    assert result["status"] == "output_limit"
    assert result["message"] == "stdout length exceeded"
    assert len(streamed.text("stdout").encode()) <= (api.settings.response_output_limit
                                                     + len(CUT_MARKER))


def test_timeout_applies(client: httpx.Client) -> None:
    streamed = stream_exec(client, {"lang": "bash", "code": "echo before\nsleep 30\n",
                                    "timeout": 1})
    assert streamed.text("stdout") == "before\n"
    assert streamed.result["status"] == "timeout"
    assert streamed.events[-1].at < 15


def test_request_errors_are_json_before_any_stream(api: RunningApp,
                                                   client: httpx.Client) -> None:
    unknown = client.post("/exec/stream", json={"lang": "cobol", "code": "x"})
    assert unknown.status_code == 400
    assert unknown.headers["content-type"].startswith("application/json")
    assert unknown.json()["error"] == "bad_request"
    wrong_type = client.post("/exec/stream", content=b"lang=py",
                             headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    too_big = client.post("/exec/stream", json={"lang": "py",
                                                "code": "#" * (api.settings.max_code_size + 1)})
    assert too_big.status_code == 413
    missing = client.post("/exec/stream", json={"lang": "py", "code": "print(1)",
                                                "files": [{"id": "A" * 21,
                                                           "session_id": "B" * 21}]})
    assert missing.status_code == 404
    with api.client(key=None) as anonymous:
        assert anonymous.post("/exec/stream", json={"lang": "py", "code": "1"}
                              ).status_code == 401


def test_sessions_state_and_files_across_streamed_runs(client: httpx.Client) -> None:
    first = stream_exec(client, {"lang": "py", "code": (
        "x = 41\nwith open('/mnt/data/table.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\n")})
    result = first.result
    assert result["status"] == "ok" and result["has_state"] is True
    assert [f["name"] for f in result["files"]] == ["table.csv"]
    second = stream_exec(client, {"lang": "py", "session_id": result["session_id"],
                                  "code": "print(x + 1)\nprint(open('table.csv').read())"})
    assert second.text("stdout") == "42\na,b\n1,2\n\n"
    assert second.result["session_id"] == result["session_id"]


def test_compile_errors_are_streamed(api: RunningApp, client: httpx.Client) -> None:
    available = client.get("/health/ready").json()["services"]["languages"]["available"]
    if "c" not in available:
        pytest.skip("no C toolchain here (scripts/install-toolchains installs it)")
    streamed = stream_exec(client, {"lang": "c", "code": "int main(void) { return x; }"})
    result = streamed.result
    assert result["message"] == "Compilation failed"
    assert streamed.text("stderr") == result["stderr"] and "x" in result["stderr"]
