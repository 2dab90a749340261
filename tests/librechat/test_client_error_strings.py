"""The real ``@librechat/agents`` programmatic tool maps our ``error`` strings to its own
safe sentences (``getSafeCodeApiExecutionErrorDetail``): none falls back to the
generic "Code execution failed." alone."""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY, RunningApp
from tests.programmatic.test_channel import CHANNEL
from tests.programmatic.test_error_strings import OOM

from .client import LibreChatClient


@pytest.mark.parametrize(("bash", "code", "detail"), [
    (False, "import time\ntime.sleep(30)", "Execution exceeded the time limit."),
    (False, OOM, "Execution exceeded the memory limit."),
    (False, "import sys\nsys.stdout.write('x' * 3_000_000)",
     "Execution output exceeded the size limit."),
    (True, "yes >&2", "Execution error output exceeded the size limit."),
    (False, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
     "Execution exited with code 139"),
    (False, CHANNEL + "a, b = socket.socketpair()\n"
     "send(b'{\"op\":\"call\",\"name\":\"nope\",\"input\":{}}', [b.fileno()])\n"
     "time.sleep(15)", "Generated code requested a tool that is not available."),
])
def test_the_client_shows_its_safe_detail(api: RunningApp, librechat: LibreChatClient,
                                          bash: bool, code: str, detail: str) -> None:
    answer = librechat.run("ptc", base_url=api.base_url, api_key=API_KEY, bash=bash,
                           args={"code": code, "timeout": 2000})
    assert not answer["ok"], answer
    prefix = "Bash programmatic" if bash else "Programmatic"
    assert answer["error"].startswith(
        f"{prefix} execution failed: Code execution failed. {detail}"), answer["error"]
