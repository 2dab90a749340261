"""The kernel surface left to user code, attacked in sandboxes of both factories
(nsjail and the zygote): the shared seccomp policy's refusals (io_uring,
``memfd_secret``, ptrace, cross-process memory and fds, socket families beyond
unix/inet/inet6), the mount flags, and the OOM killer's preference for user code."""

from __future__ import annotations

import pytest

from tests.conftest import RunningApp
from tests.security.sandbox_checks import assert_sandbox_posture

pytestmark = [pytest.mark.attack("isolation and secrets"), pytest.mark.sandbox]

#: Families a sandbox must not open (EAFNOSUPPORT), by number.
DENIED_FAMILIES = {"AF_PACKET": 17, "AF_KEY": 15, "AF_APPLETALK": 5,
                   "AF_BLUETOOTH": 31, "AF_ALG": 38, "AF_VSOCK": 40, "AF_XDP": 44,
                   "AF_TIPC": 30, "AF_RDS": 21, "AF_CAN": 29}


@pytest.fixture(scope="module")
def factory_api(api: RunningApp) -> RunningApp:
    """The module's API (one per factory: ``tests/security/conftest.py``), checked first."""
    with api.client() as client:
        assert_sandbox_posture(client)
    return api


def run_py(app: RunningApp, code: str) -> list[str]:
    with app.client() as client:
        body = client.post("/exec", json={"lang": "py", "code": code}).json()
    assert body["status"] == "ok", body
    return str(body["stdout"]).splitlines()


def test_io_uring_and_memfd_secret_are_refused(factory_api: RunningApp) -> None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
for name, number, args in (("io_uring_setup", 425, (8, params)), ("io_uring_enter", 426,
        (0, 1, 0, 0, None, 0)), ("io_uring_register", 427, (0, 0, None, 0)),
        ("memfd_secret", 447, (0,))):
    print(name, libc.syscall(number, *args), ctypes.get_errno())
"""
    assert run_py(factory_api, code) == ["io_uring_setup -1 1", "io_uring_enter -1 1",
                                         "io_uring_register -1 1", "memfd_secret -1 1"]


def test_other_processes_cannot_be_traced_or_read(factory_api: RunningApp) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
child = os.fork()
if child == 0:
    os.pause()
print("ptrace", libc.ptrace(16, child, None, None), ctypes.get_errno())  # PTRACE_ATTACH
print("process_vm_readv", libc.syscall(310, child, None, 0, None, 0, 0), ctypes.get_errno())
print("kcmp", libc.syscall(312, os.getpid(), child, 0, 0, 0), ctypes.get_errno())
pidfd = os.pidfd_open(child)  # allowed (runtimes wait on children with it): not their fds
print("pidfd_getfd", libc.syscall(438, pidfd, 0, 0), ctypes.get_errno())  # its stdin
print("process_madvise", libc.syscall(440, pidfd, None, 0, 0, 0), ctypes.get_errno())
os.kill(child, 9)
"""
    assert run_py(factory_api, code) == ["ptrace -1 1", "process_vm_readv -1 1", "kcmp -1 1",
                                         "pidfd_getfd -1 1", "process_madvise -1 1"]


@pytest.mark.parametrize("family", sorted(DENIED_FAMILIES))
def test_a_socket_family_beyond_unix_and_inet_is_refused(factory_api: RunningApp,
                                                        family: str) -> None:
    number = DENIED_FAMILIES[family]
    code = f"""
import errno, socket
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET):
    try:
        socket.socket({number}, kind).close()
        print("opened", kind)
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, exc.errno))
try:
    socket.socketpair({number}, socket.SOCK_STREAM)
    print("pair opened")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""
    assert set(run_py(factory_api, code)) == {"EAFNOSUPPORT"}


def test_netlink_is_route_only(factory_api: RunningApp) -> None:
    """Route netlink (libc's interface listing) works and shows lo; every other netlink
    protocol (sock_diag, xfrm, audit, uevents, generic) is refused."""
    code = """
import errno, socket
print(",".join(name for _, name in socket.if_nameindex()))
for protocol in (4, 6, 9, 15, 16):
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol).close()
        print(protocol, "opened")
    except OSError as exc:
        print(protocol, errno.errorcode.get(exc.errno, exc.errno))
"""
    assert run_py(factory_api, code) == ["lo", "4 EAFNOSUPPORT", "6 EAFNOSUPPORT",
                                         "9 EAFNOSUPPORT", "15 EAFNOSUPPORT",
                                         "16 EAFNOSUPPORT"]


def test_unix_and_inet_sockets_still_work(factory_api: RunningApp) -> None:
    code = """
import socket
a, b = socket.socketpair(socket.AF_UNIX)
a.sendall(b"ping"); print(b.recv(4).decode())
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
conn, _ = server.accept(); client.sendall(b"pong"); print(conn.recv(4).decode())
print(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).family.name)
print(socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP)[0][0].name)
"""
    assert run_py(factory_api, code) == ["ping", "pong", "AF_INET6", "AF_INET"]


def test_user_code_is_the_oom_killers_first_choice(factory_api: RunningApp) -> None:
    code = """
import subprocess
print(open("/proc/self/oom_score_adj").read().strip())
print(subprocess.run(["cat", "/proc/self/oom_score_adj"], capture_output=True,
                     text=True).stdout.strip())
print(open("/proc/1/oom_score_adj").read().strip())
"""
    own, child, executor = run_py(factory_api, code)
    assert own == child == "1000"
    assert int(executor) < 1000, "the executor is not the first choice"
    with factory_api.client() as client:
        bash = client.post("/exec", json={"lang": "bash",
                                          "code": "cat /proc/self/oom_score_adj"}).json()
    assert bash["stdout"] == "1000\n"


def test_every_mount_is_nosuid_and_nodev_but_devices(factory_api: RunningApp) -> None:
    code = """
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    print(fields[4], fields[5])
"""
    mounts = dict(line.split(" ", 1) for line in run_py(factory_api, code))
    for target in ("/", "/usr", "/tmp", "/mnt/data", "/dev/shm", "/proc", "/opt/k8si/sidecar"):
        flags = set(mounts[target].split(","))
        assert {"nosuid", "nodev"} <= flags, (target, flags)
    assert "noexec" in mounts["/proc"]
    assert "noexec" not in mounts["/tmp"] and "noexec" not in mounts["/mnt/data"], \
        "compiled languages run their binaries from the work dir and /tmp"
    for device in ("/dev/null", "/dev/urandom"):
        assert "nosuid" in mounts[device] and "nodev" not in mounts[device]


def test_compiled_code_still_runs_from_tmp_and_the_work_dir(factory_api: RunningApp) -> None:
    with factory_api.client() as client:
        body = client.post("/exec", json={"lang": "c", "code": (
            '#include <stdio.h>\nint main(void) { puts("compiled"); return 0; }\n')}).json()
    if body.get("error") == "unsupported_language":
        pytest.skip("no C toolchain here")
    assert body["stdout"] == "compiled\n", body
