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
