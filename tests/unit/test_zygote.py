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

from app.backends.local import LocalBackend, zygote_seccomp
from app.backends.local.zygote import unavailable_reason
from tests.conftest import (
    SECRET_ENV,
    RunningApp,
    make_settings,
    start_app,
    stop_app,
)
from tests.security.sandbox_checks import (
    assert_sandbox_posture,
    assert_worker_end_is_reported_safely,
    wait_until_no_process_of,
)

_EPERM = 0x00050000 | 1


def _run(program: list[tuple[int, int, int, int]], nr: int, arg0: int = 0,
         arch: int = 0xC000003E) -> int:
    """Interpret the classic BPF program on one seccomp_data."""
    data = {0: nr, 4: arch, 16: arg0}
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


@pytest.mark.skipif(not zygote_seccomp.supported(), reason="x86-64 filter")
def test_seccomp_filter_refuses_in_a_real_process() -> None:
    code = ("import ctypes, os, sys; sys.path.insert(0, 'app/backends/local'); "
            "import zygote_seccomp; libc = ctypes.CDLL(None, use_errno=True); "
            "libc.prctl(38, 1, 0, 0, 0); zygote_seccomp.install(); "
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
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def test_zygote_sandboxes_hold_the_sandbox_posture(zygote_api: RunningApp) -> None:
    backend = zygote_api.app.state.backend
    assert isinstance(backend, LocalBackend)
    if unavailable_reason(backend._cgroups) is not None:
        pytest.skip(f"zygote unavailable: {unavailable_reason(backend._cgroups)}")
    deadline = time.monotonic() + 60
    while zygote_api.run(backend.health())["sandbox_factory"] != "zygote":
        assert time.monotonic() < deadline, "the zygote did not start"
        time.sleep(0.1)
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


def test_the_zygote_image_is_backed_by_huge_pages_where_the_kernel_can() -> None:
    """Forks copy one page-table entry per 2 MiB instead of per 4 KiB page."""
    code = ("from app.backends.local.zygote_server import _collapse_into_huge_pages\n"
            "heap = [bytearray(b'x' * 4096) for _ in range(16384)]  # 64 MiB of small objects\n"
            "collapsed = _collapse_into_huge_pages()\n"
            "huge = [l for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHuge')]\n"
            "print(collapsed, int(huge[0].split()[1]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    collapsed, huge_kb = map(int, result.stdout.split())
    if collapsed == 0:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
        pytest.skip(f"no MADV_COLLAPSE here (transparent huge pages: {mode})")
    assert huge_kb >= 2048
