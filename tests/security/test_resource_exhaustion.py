"""Resource limits: timeouts kill the whole tree, floods stop at the cap, bombs are contained."""

from __future__ import annotations

import os
import time

import httpx
import psutil
import pytest

from tests.conftest import RunningApp
from tests.security.sandbox_checks import assert_sandbox_posture, wait_until_no_process_of

DAEMONISING_SLEEPER = """
import os, sys, time
print(os.getuid(), flush=True)
if os.fork() == 0:
    os.setsid()                      # leave the process group and session
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)             # a real daemon: no pipe keeps the executor waiting
        time.sleep(3600)
    os._exit(0)
time.sleep(3600)
"""

pytestmark = pytest.mark.attack("resource exhaustion")


@pytest.fixture(scope="module", autouse=True)
def _posture(api: RunningApp) -> None:
    with api.client() as http:
        assert_sandbox_posture(http)


def _healthy_after(client: httpx.Client) -> None:
    """The service still answers and the next normal execution works."""
    assert client.get("/health").status_code == 200
    body = client.post("/exec", json={"lang": "bash", "code": "echo still-fine"}).json()
    assert body["stdout"] == "still-fine\n", body


def test_timeout_kills_setsid_double_forked_daemon(client: httpx.Client) -> None:
    response = client.post("/exec", json={"lang": "py", "code": DAEMONISING_SLEEPER,
                                          "timeout": 2})
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "timeout"
    assert body["message"] == "Time limit exceeded"
    assert body["signal"] == "SIGKILL"
    assert 1.5 < body["wall_time"] < 10
    uid = int(body["stdout"].split()[0])
    assert wait_until_no_process_of(uid) == [], "a process of the sandbox survived"
    _healthy_after(client)


def test_timeout_in_milliseconds_and_clamped(client: httpx.Client, api: RunningApp) -> None:
    body = client.post("/exec", json={"lang": "bash", "code": "sleep 30",
                                      "timeout": 1500}).json()
    assert body["status"] == "timeout"
    assert body["wall_time"] < 5
    # above the maximum: clamped, never longer than MAX_EXECUTION_TIME
    body = client.post("/exec", json={"lang": "bash", "code": "echo quick",
                                      "timeout": 10_000_000}).json()
    assert body["status"] == "ok"


@pytest.mark.parametrize("stream,code", [
    ("stdout", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"),
    ("stdout", "import sys\nwhile True:\n    print('line of output')\n"),
    ("stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n"),
])
def test_output_flood_stops_at_cap(client: httpx.Client, api: RunningApp, stream: str,
                                   code: str) -> None:
    rss_before = psutil.Process(os.getpid()).memory_info().rss
    for _ in range(3):
        response = client.post("/exec", json={"lang": "py", "code": code, "timeout": 20})
        body = response.json()
        assert body["status"] == "output_limit", body
        assert body["message"] == f"{stream} length exceeded"
        limit = api.settings.response_output_limit
        assert len(body[stream].encode()) <= limit + 200
        assert "output limit reached" in body[stream]
        assert body["wall_time"] < 10, "the program must be stopped at the cap, not at timeout"
        assert len(response.content) < 3 * limit
    growth = psutil.Process(os.getpid()).memory_info().rss - rss_before
    assert growth < 64 * 1024 * 1024, f"API memory grew by {growth} bytes"


def test_invalid_utf8_and_escapes_in_output(client: httpx.Client) -> None:
    code = "printf '\\xff\\xfe ok \\033[2J\\033]0;title\\007 done\\n'"
    body = client.post("/exec", json={"lang": "bash", "code": code}).json()
    assert body["status"] == "ok"
    assert "ok" in body["stdout"] and "done" in body["stdout"]
    assert "\ufffd" in body["stdout"]  # invalid bytes replaced, never a 500


def test_memory_bomb_is_oom(client: httpx.Client, api: RunningApp) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(b'x' * (64 * 1024 * 1024))\n"
    body = client.post("/exec", json={"lang": "py", "code": code, "timeout": 20}).json()
    assert body["status"] == "oom", body
    assert body["message"] == "Out of memory"
    assert body["signal"] == "SIGKILL"
    _healthy_after(client)


def test_memory_bomb_in_c_is_oom(client: httpx.Client) -> None:
    code = ("#include <stdlib.h>\n#include <string.h>\n"
            "int main(void) { for (;;) { char *p = malloc(1 << 24); if (!p) return 9; "
            "memset(p, 1, 1 << 24); } }\n")
    body = client.post("/exec", json={"lang": "c", "code": code, "timeout": 20}).json()
    assert body["status"] == "oom", body


def test_fork_bomb_is_contained(client: httpx.Client) -> None:
    started = time.monotonic()
    code = "echo $(id -u)\n:(){ :|:& };:\nsleep 30\n"
    body = client.post("/exec", json={"lang": "bash", "code": code, "timeout": 5}).json()
    assert body["status"] in ("timeout", "error"), body
    assert time.monotonic() - started < 60
    uid = int(body["stdout"].split()[0])
    assert wait_until_no_process_of(uid) == []
    _healthy_after(client)


def test_python_fork_bomb_is_contained(client: httpx.Client) -> None:
    code = ("import os\nprint(os.getuid(), flush=True)\n"
            "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    body = client.post("/exec", json={"lang": "py", "code": code, "timeout": 4}).json()
    assert body["status"] in ("timeout", "error", "oom"), body
    uid = int(body["stdout"].split()[0])
    assert wait_until_no_process_of(uid) == []
    _healthy_after(client)


def test_cpu_spin_is_stopped(client: httpx.Client) -> None:
    body = client.post("/exec", json={"lang": "c", "code": "int main(void){for(;;);}",
                                      "timeout": 2}).json()
    assert body["status"] == "timeout"
    assert body["cpu_time"] < 10


def test_disk_fill_hits_the_work_dir_limit(client: httpx.Client, api: RunningApp) -> None:
    code = ("dd if=/dev/zero of=/mnt/data/fill bs=1M count=4096 2>/dev/null; echo \"dd=$?\"\n"
            "stat -c %s /mnt/data/fill\n")
    body = client.post("/exec", json={"lang": "bash", "code": code, "timeout": 20}).json()
    assert body["status"] == "ok", body
    dd_status, size = body["stdout"].split()
    assert dd_status != "dd=0"
    assert int(size) <= api.settings.sandbox_workdir_mb * 1024 * 1024
    _healthy_after(client)


def test_file_count_bomb_is_contained(client: httpx.Client) -> None:
    code = "import os\nfor i in range(10**7):\n    open(f'/tmp/f{i}', 'w').close()\n"
    body = client.post("/exec", json={"lang": "py", "code": code, "timeout": 5}).json()
    assert body["status"] in ("error", "timeout"), body
    _healthy_after(client)


def test_fd_exhaustion_is_contained(client: httpx.Client) -> None:
    code = "fds = []\nwhile True:\n    fds.append(open('/dev/null'))\n"
    body = client.post("/exec", json={"lang": "py", "code": code, "timeout": 5}).json()
    assert body["status"] == "error"
    assert "Too many open files" in body["stderr"]
    _healthy_after(client)
