"""The ``error`` of a programmatic run that ended in error is one of the strings
LibreChat's client maps to a safe message; ``/exec``'s ``message`` carries the same
words for the limits. Each limit is also tried just inside, where the run completes."""

from __future__ import annotations

import httpx
import pytest

from .helpers import TOOLS, step
from .test_channel import CHANNEL

OOM = "x = []\nwhile True:\n    x.append(b'x' * 2**26)\n"
WITHIN_MEMORY = "x = b'x' * 2**24\nprint(len(x))"


def run(client: httpx.Client, code: str, lang: str = "py",
        timeout: int = 10000) -> dict[str, object]:
    return step(client, {"code": code, "lang": lang, "tools": TOOLS, "timeout": timeout})


@pytest.mark.parametrize(("lang", "code", "error"), [
    ("py", "import time\ntime.sleep(30)", "Time limit exceeded"),
    ("bash", "sleep 30", "Time limit exceeded"),
    ("py", OOM, "Out of memory"),
    ("py", "import sys\nsys.stdout.write('x' * 3_000_000)", "stdout length exceeded"),
    ("py", "import sys\nsys.stderr.write('x' * 3_000_000)", "stderr length exceeded"),
    ("bash", "yes", "stdout length exceeded"),
    ("py", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
     "Sandbox exited with code 139"),
    ("bash", "kill -ABRT $$", "Sandbox exited with code 134"),
    ("py", CHANNEL + "a, b = socket.socketpair()\n"
     "send(b'{\"op\":\"call\",\"name\":\"delete_everything\",\"input\":{}}', [b.fileno()])\n"
     "time.sleep(15)", "Sandbox requested an unregistered tool: delete_everything"),
])
def test_each_limit_has_the_clients_word(client: httpx.Client, lang: str, code: str,
                                         error: str) -> None:
    answer = run(client, code, lang, timeout=2000)
    assert answer["status"] == "error", answer
    assert answer["error"] == error


@pytest.mark.parametrize(("lang", "code", "stdout"), [
    ("py", "import time\ntime.sleep(0.2)\nprint('in time')", "in time\n"),
    ("py", WITHIN_MEMORY, f"{2**24}\n"),
    ("py", "import sys\nsys.stdout.write('x' * 60_000)", "x" * 60_000),
    # the program's own failures complete, with them in stderr
    ("py", "raise SystemExit(3)", ""),
    ("bash", "echo before; exit 7", "before\n"),
    ("py", "raise ValueError('own')", ""),
])
def test_just_inside_the_limits_the_run_completes(client: httpx.Client, lang: str,
                                                  code: str, stdout: str) -> None:
    answer = run(client, code, lang, timeout=2000)
    assert answer["status"] == "completed", answer
    assert answer["error"] is None and answer["stdout"] == stdout


@pytest.mark.parametrize(("code", "status", "message"), [
    ("sleep 30", "timeout", "Time limit exceeded"),
    ("yes", "output_limit", "stdout length exceeded"),
    ("yes >&2", "output_limit", "stderr length exceeded"),
])
def test_exec_names_the_limit_in_message(client: httpx.Client, code: str, status: str,
                                         message: str) -> None:
    answer = client.post("/exec", json={"lang": "bash", "code": code, "timeout": 1000}).json()
    assert (answer["status"], answer["message"]) == (status, message)


def test_exec_names_out_of_memory(client: httpx.Client) -> None:
    answer = client.post("/exec", json={"lang": "py", "code": OOM}).json()
    assert (answer["status"], answer["message"]) == ("oom", "Out of memory")
    fits = client.post("/exec", json={"lang": "py", "code": WITHIN_MEMORY}).json()
    assert (fits["status"], fits["message"]) == ("ok", None)
