"""Helpers for tests that look at sandboxes from outside (the host's process table)."""

from __future__ import annotations

import time

import httpx
import psutil

POSTURE_CODE = """
import os, socket
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print("uid", os.getuid())
print("pid1", open("/proc/1/cmdline").read().split("\\0")[2:3] == ["-c"])
print("cap", status["CapEff"].strip())
print("ifaces", ",".join(name for _, name in socket.if_nameindex()))
"""


def assert_sandbox_posture(client: httpx.Client) -> None:
    """Prove the sandbox is in place before a destructive test runs in it."""
    body = client.post("/exec", json={"lang": "py", "code": POSTURE_CODE}).json()
    assert body["status"] == "ok", body
    facts = dict(line.split(" ", 1) for line in body["stdout"].splitlines())
    assert int(facts["uid"]) != 0, "sandbox runs as root"
    assert facts["pid1"] == "True", "user code is not under the executor as PID 1"
    assert int(facts["cap"], 16) == 0, "sandbox has capabilities"
    assert facts["ifaces"] == "lo", "sandbox sees network interfaces"


def processes_of_uid(uid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["uids"]):
        uids = process.info["uids"]
        if uids is not None and uid in (uids.real, uids.effective):
            found.append(process)
    return found


def wait_until_no_process_of(uid: int, timeout: float = 15.0) -> list[psutil.Process]:
    """Survivors of a sandbox after its destruction (empty when everything died)."""
    deadline = time.monotonic() + timeout
    while True:
        survivors = processes_of_uid(uid)
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.1)


_FIND_DONE_FD = ("import os\n"
                 "done = [int(fd) for fd in os.listdir('/proc/self/fd') if int(fd) >= 100]\n")


def assert_worker_end_is_reported_safely(client: httpx.Client) -> None:
    """The warm Python worker's "done" report (status, usage) ends the run early.

    Its output is whole, its status and usage are reported; a program that forges the
    report only ends its own run, as exiting would; one that closes the report's fd
    is awaited the ordinary way; and nothing of any of them survives.
    """
    code = ("import sys\nsys.stdout.write('o' * 50000)\nsys.stderr.write('e' * 30000)\n"
            "data = bytearray(40 * 1024 * 1024)\nraise SystemExit(7)\n")
    body = client.post("/exec", json={"lang": "py", "code": code}).json()
    assert body["code"] == 7 and body["status"] == "error", body["message"]
    assert body["stdout"] == "o" * 50000 and body["stderr"] == "e" * 30000
    assert body["memory"] > 40 * 1024 * 1024 and body["cpu_time"] >= 0

    # A forged report mid-run: the run ends there (an endless loop would time out).
    forged = _FIND_DONE_FD + (
        "print('uid', os.getuid(), flush=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    while True: pass\n"
        "os.write(done[0], b'{\"done\": 0, \"cpu\": 0, \"max_rss\": 0}\\n')\n"
        "while True: pass\n")
    body = client.post("/exec", json={"lang": "py", "code": forged, "timeout": 8}).json()
    assert body["status"] == "ok" and body["code"] == 0, body
    uid = int(body["stdout"].split()[1])
    assert wait_until_no_process_of(uid) == []

    # Garbage on the fd, then the fd closed: the exit is awaited as usual.
    for trick in ("os.write(done[0], b'{\"done\": \"x\"}\\n')\nprint('still here')\n",
                  "os.closerange(3, 4096)\nprint('still here')\n"):
        body = client.post("/exec", json={"lang": "py", "code": _FIND_DONE_FD + trick}).json()
        assert body["status"] == "ok" and body["stdout"] == "still here\n", body
    assert client.post("/exec", json={"lang": "py", "code": "print(6 * 7)"}).json()[
        "stdout"] == "42\n"
