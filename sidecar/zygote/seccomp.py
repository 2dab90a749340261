"""Install the sandbox's seccomp filter in a zygote sandbox (x86-64 classic BPF).

The policy itself is ``sidecar.seccomp_policy``, the one source that nsjail's kafel
text is generated from too; this module only checks the architecture and hands the
program to the kernel. Standard library only: it runs inside the zygote
(``jail``), where ``sidecar`` is importable from ``/opt/k8si``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from sidecar.seccomp_policy import DENIED, bpf_program

__all__ = ["DENIED", "install", "program", "supported"]

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def supported() -> bool:
    """The BPF form of the policy is written for x86-64 only."""
    return platform.machine() == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    return bpf_program()


def install() -> None:
    """Install the filter on the calling (single-threaded) process; needs no_new_privs."""
    instructions = program()
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
    buffer = ctypes.create_string_buffer(raw)

    class _Prog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    prog = _Prog(len(instructions), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp: {os.strerror(errno)}")
