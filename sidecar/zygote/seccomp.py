"""Install the sandbox's seccomp filter in a zygote sandbox (x86-64 classic BPF).

The policy itself is ``sidecar.seccomp_policy``, the one source that nsjail's kafel
text is generated from too; this module only checks the architecture and hands the
program to the kernel. Standard library only: it runs inside the zygote
(``jail``), where ``sidecar`` is importable from ``/opt/k8si``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct

from sidecar.seccomp_policy import DENIED, bpf_program

__all__ = ["DENIED", "install", "prepare", "program", "supported"]

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_libc = ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """The BPF form of the policy is written for x86-64 only."""
    return platform.machine() == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    return bpf_program()


class _Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


@functools.cache
def _packed() -> tuple[int, ctypes.Array[ctypes.c_char]]:
    """The program's length and its packed instructions: built once, in the zygote
    (``prepare``), so no sandbox builds it again."""
    instructions = program()
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
    return len(instructions), ctypes.create_string_buffer(raw)


def prepare() -> None:
    """Build the packed program now (the zygote, before it forks any sandbox)."""
    _packed()


def install() -> None:
    """Install the filter on the calling (single-threaded) process; needs no_new_privs."""
    length, buffer = _packed()
    prog = _Prog(length, ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp: {os.strerror(errno)}")
