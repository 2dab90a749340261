"""Inside a zygote child: build the sandbox's root, identity and limits (as nsjail does).

``enter(spec)`` runs in PID 1 of the new PID namespace, right after the fork, still as
root: it builds a fresh root on a tmpfs from the mount plan the API computed
(``zygote.mount_plan``: the same layout as the nsjail command line), pivots into
it and detaches the old root, makes the root read-only, sets the host name, brings
up loopback, sets nsjail's rlimits, drops every capability (bounding and ambient
sets included) by becoming the sandbox's own uid, sets ``no_new_privs`` and
installs the seccomp filter (``seccomp``). Standard library only.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import socket
import struct
from typing import Any

from . import seccomp

__all__ = ["CLONE_FLAGS", "enter", "mount", "prctl", "setns", "unshare"]

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
CLONE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID
               | CLONE_NEWNET)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 24, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SYS_PIVOT_ROOT = 155
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP, _IFF_RUNNING = 0x8913, 0x8914, 0x1, 0x40


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _mountpoint(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _apply(root: str, op: list[Any]) -> None:
    kind = op[0]
    if kind == "tmpfs":
        target = root + op[1]
        _mountpoint(target, True)
        mount("none", target, "tmpfs", MS_NOSUID | MS_NODEV, op[2])
    elif kind == "bind":
        source, target, readonly, devices = op[1], root + op[2], op[3], op[4]
        _mountpoint(target, os.path.isdir(source))
        mount(source, target, None, MS_BIND)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if devices else MS_NODEV)
        mount(None, target, None, flags | (MS_RDONLY if readonly else 0))
    elif kind == "symlink":
        link = root + op[2]
        os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
        os.symlink(op[1], link)
    elif kind == "proc":
        target = root + op[1]
        _mountpoint(target, True)
        mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        raise ValueError(f"unknown mount operation {kind!r}")


def _pivot(root: str) -> None:
    os.chdir(root)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo",
                                                     flags | _IFF_UP | _IFF_RUNNING))


def _rlimits() -> None:
    """nsjail's: the executor sets each program's own; these only bound the sandbox."""
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE,
                  resource.RLIMIT_NPROC, resource.RLIMIT_STACK):
        hard = resource.getrlimit(limit)[1]
        resource.setrlimit(limit, (hard, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _become(uid: int) -> None:
    """The sandbox's own uid and gid, no supplementary groups, no capabilities at all."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last_cap = int(handle.read())
    for cap in range(last_cap + 1):
        prctl(_PR_CAPBSET_DROP, cap)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # permitted and effective capabilities are cleared here


def enter(spec: dict[str, Any]) -> None:
    """Turn this process (PID 1 of fresh namespaces, root) into the sandbox."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = spec["root"]
    mount("none", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1048576,nr_inodes=4096,mode=0755")
    for op in spec["mounts"]:
        _apply(root, op)
    _pivot(root)
    socket.sethostname(spec["hostname"])
    _loopback_up()
    _rlimits()
    _become(int(spec["uid"]))
    prctl(_PR_SET_PDEATHSIG, 9)  # after the uid change, which clears it
    prctl(_PR_SET_NO_NEW_PRIVS, 1)
    seccomp.install()
