"""The zygote sandbox factory's own parts: the seccomp program, and that the shared
API's sandboxes come from it where it can run (so the security suite covers it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.backends.local import LocalBackend
from sidecar.zygote import seccomp as zygote_seccomp
from tests.conftest import (
    SECRET_ENV,
    RunningApp,
    make_settings,
    serving,
    start_app,
    stop_app,
    wait_for_factory,
)
from tests.security.sandbox_checks import (
    assert_sandbox_posture,
    assert_worker_end_is_reported_safely,
    wait_until_no_process_of,
)

_EPERM = 0x00050000 | 1


def _run(program: list[tuple[int, int, int, int]], nr: int, arg0: int = 0,
         arch: int = 0xC000003E, arg2: int = 0) -> int:
    """Interpret the classic BPF program on one seccomp_data."""
    data = {0: nr, 4: arch, 16: arg0, 32: arg2}
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:
            accumulator = data[k]
        elif code == 0x06:
            return k
        else:
            taken = {0x15: accumulator == k, 0x35: accumulator >= k,
                     0x45: bool(accumulator & k)}[code]
            pc += jt if taken else jf
        pc += 1


def test_seccomp_program_matches_the_policy() -> None:
    program = zygote_seccomp.program()
    for name, number in zygote_seccomp.DENIED.items():
        assert _run(program, number) == _EPERM, name
    assert _run(program, 56, arg0=0x01200011) == 0x7FFF0000  # fork-like clone: allowed
    assert _run(program, 56, arg0=0x10000000) == _EPERM  # CLONE_NEWUSER
    assert _run(program, 435) == 0x00050000 | 38  # clone3: ENOSYS
    assert _run(program, 0) == 0x7FFF0000  # read
    assert _run(program, 272 | 0x40000000) == 0x00050000 | 38  # x32 unshare
    assert _run(program, 0, arch=0x40000003) == 0x80000000  # i386: killed
    for family in (1, 2, 10):  # socket and socketpair of unix, inet, inet6: allowed
        assert _run(program, 41, arg0=family) == _run(program, 53, arg0=family) == 0x7FFF0000
    for family in (17, 38, 40, 44):  # packet, alg, vsock, xdp
        assert _run(program, 41, arg0=family) == 0x00050000 | 97
    assert _run(program, 41, arg0=16, arg2=0) == 0x7FFF0000  # netlink route
    assert _run(program, 41, arg0=16, arg2=16) == 0x00050000 | 97  # generic netlink


@pytest.mark.skipif(not zygote_seccomp.supported(), reason="x86-64 filter")
def test_seccomp_filter_refuses_in_a_real_process() -> None:
    code = ("import ctypes, os; from sidecar.zygote import seccomp; "
            "libc = ctypes.CDLL(None, use_errno=True); "
            "libc.prctl(38, 1, 0, 0, 0); seccomp.install(); "
            "print(libc.unshare(0x20000), ctypes.get_errno(), "
            "libc.syscall(435, 0, 0), ctypes.get_errno(), os.getpid() > 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["-1", "1", "-1", "38", "True"]


@pytest.fixture(scope="module")
def zygote_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
               valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path_factory.mktemp("zygote"), runtime_dir, valkey_url,
                             sandbox_factory="zygote", pool_sizes={"py": 1})
    yield from serving(start_app(settings))


def test_zygote_sandboxes_hold_the_sandbox_posture(zygote_api: RunningApp) -> None:
    wait_for_factory(zygote_api, "zygote")
    assert os.geteuid() == 0
    with zygote_api.client() as client:
        assert_sandbox_posture(client)
        secret = os.environ[SECRET_ENV]
        env = client.post("/exec", json={"lang": "bash", "code": "env; cat /proc/1/environ"}
                          ).json()
        assert secret not in env["stdout"] + env["stderr"]
        code = ("import os, time\nprint(os.getuid(), flush=True)\n"
                "if os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\n"
                "time.sleep(3600)\n")
        body = client.post("/exec", json={"lang": "py", "code": code, "timeout": 2}).json()
        assert body["status"] == "timeout"
        assert wait_until_no_process_of(int(body["stdout"].split()[0])) == []
        assert_worker_end_is_reported_safely(client)


def _owned(pid: int, ranges: list[list[int]]) -> tuple[int, int]:
    """Of these pages, (how many are mapped in ``pid``, how many only by ``pid``)."""
    mapped = owned = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for first, count in ranges:
            pagemap.seek(first * 8)
            for entry in memoryview(pagemap.read(count * 8)).cast("Q"):
                mapped += bool(entry >> 63 & 1)
                owned += bool(entry >> 63 & 1 and entry >> 56 & 1)
    return mapped, owned


def _calibrated(running: RunningApp) -> LocalBackend:
    """The backend, once its zygote runs and the calibration's pages are known."""
    backend = running.app.state.backend
    assert isinstance(backend, LocalBackend)
    wait_for_factory(running, "zygote")
    deadline = time.monotonic() + 60
    while not running.run(backend.health())["prefault_pages"]:
        assert time.monotonic() < deadline, "no calibration"
        time.sleep(0.1)
    return backend


def test_zygote_sandboxes_copy_their_calibrated_pages_before_the_claim(
        zygote_api: RunningApp) -> None:
    """The calibration found the pages a request writes; warm sandboxes own them already."""
    backend = _calibrated(zygote_api)
    deadline = time.monotonic() + 60
    while not backend.warm("py"):
        assert time.monotonic() < deadline, "no warm sandbox"
        time.sleep(0.1)
    sandbox = backend.warm("py")[0]
    generation = backend.factory.generation_of(sandbox)  # its zygote's own calibration
    assert generation is not None
    plan = generation.factory.prefault
    assert plan is not None and plan["executor"] and plan["worker"]
    executor = sandbox.pid  # PID 1 of the sandbox: the executor
    assert executor is not None
    children = Path(f"/proc/{executor}/task/{executor}/children").read_text().split()
    assert len(children) == 1  # the warm worker
    for pid, ranges in ((executor, plan["executor"]), (int(children[0]), plan["worker"])):
        mapped, owned = _owned(pid, ranges)
        # Nearly all: a few planned pages belong to memory mapped only later.
        assert mapped and owned >= 0.8 * mapped, (pid, mapped, owned)
    with zygote_api.client() as client:  # and the copies changed nothing
        body = client.post("/exec", json={
            "lang": "py", "code": "import numpy, pandas\nx = pandas.Series(numpy.arange(5))\n"
                                  "print(int(x.sum()))"}).json()
        assert (body["status"], body["stdout"]) == ("ok", "10\n")
        again = client.post("/exec", json={"lang": "py", "code": "print(int(x.max()))",
                                           "session_id": body["session_id"]}).json()
        assert (again["status"], again["stdout"]) == ("ok", "4\n")


def test_a_sandbox_made_without_prefault_leaves_its_pages_shared(
        zygote_api: RunningApp) -> None:
    """``make(prefault=False)`` (an on-demand sandbox, or a refill while every core runs
    an execution): the planned pages stay the zygote's; with ``prefault=True`` they are
    the sandbox's own before it is ready."""
    backend = _calibrated(zygote_api)
    shares = {}
    for prefault in (False, True):
        sandbox = zygote_api.run(backend.factory.make("py", None, prefault=prefault))
        try:
            generation = backend.factory.generation_of(sandbox)
            assert generation is not None and generation.factory.prefault is not None
            assert sandbox.pid is not None
            mapped, owned = _owned(sandbox.pid, generation.factory.prefault["executor"])
            assert mapped, prefault
            shares[prefault] = owned / mapped
        finally:
            zygote_api.run(backend.factory.destroy(sandbox))
    assert shares[True] >= 0.8 and shares[False] < shares[True] / 2, shares


def test_without_prefault_no_calibration_runs(tmp_path: Path, runtime_dir: Path,
                                             valkey_url: str) -> None:
    settings = make_settings(tmp_path, runtime_dir, valkey_url, sandbox_factory="zygote",
                             sandbox_prefault=False, pool_sizes={"py": 1})
    running, server, thread = start_app(settings)
    try:
        backend = running.app.state.backend
        assert isinstance(backend, LocalBackend)
        wait_for_factory(running, "zygote")
        deadline = time.monotonic() + 60
        while not backend.warm("py"):  # the pool fills after the zygote's start
            assert time.monotonic() < deadline, "no warm sandbox"
            time.sleep(0.1)
        assert running.run(backend.health())["sandbox_factory"] == "zygote"
        assert backend.generations is not None
        zygote = backend.generations.any_factory()
        assert zygote is not None and zygote.prefault is None
        assert running.run(backend.health())["prefault_pages"] == 0
        with running.client() as client:
            body = client.post("/exec", json={"lang": "py", "code": "print(1)"}).json()
        assert (body["status"], body["stdout"]) == ("ok", "1\n")
    finally:
        stop_app(server, thread)
