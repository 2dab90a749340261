"""The sandbox's seccomp filter as a classic BPF program (x86-64), for zygote sandboxes.

The same policy as the nsjail sandboxes' kafel text (``nsjail._SECCOMP``): namespace,
mount, keyring, BPF, module, perf and similar syscalls answer EPERM; ``clone`` with
any namespace flag answers EPERM; ``clone3`` answers ENOSYS (so libc falls back to
``clone``, whose flags can be checked); everything else is allowed. Stricter than
kafel in two places: another architecture's syscalls (32-bit ``int 0x80``) kill
the process, and x32 syscall numbers answer ENOSYS, so neither ABI is a way around
the list. Standard library only: it runs inside the zygote (``zygote_server``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

__all__ = ["DENIED", "install", "program", "supported"]

#: x86-64 syscall numbers (asm/unistd_64.h) refused with EPERM.
DENIED = {
    "syslog": 103, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442,
}
_CLONE, _CLONE3 = 56, 435
#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_NAMESPACE_FLAGS = 0x7E020000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_EPERM, _ENOSYS = 1, 38
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def supported() -> bool:
    """The filter is written for x86-64 only."""
    return platform.machine() == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions (jumps count from the next one)."""
    denied = sorted(DENIED.values())
    # 0-3 header, the denied numbers, clone, clone3, ALLOW, then the clone check (load,
    # test) followed by EPERM and a second ALLOW, then ENOSYS and KILL.
    allow_at = 4 + len(denied) + 2
    check_at = allow_at + 1
    eperm_at = check_at + 2
    enosys_at = eperm_at + 2
    kill_at = enosys_at + 1

    def jump_to(target: int, here: int) -> int:
        offset = target - here - 1
        assert 0 <= offset < 256
        return offset

    code: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),                                     # arch
        (_JEQ, 0, jump_to(kill_at, 1), _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, 0),                                     # syscall number
        (_JGE, jump_to(enosys_at, 3), 0, _X32_BIT),
    ]
    for number in denied:
        code.append((_JEQ, jump_to(eperm_at, len(code)), 0, number))
    code.append((_JEQ, jump_to(check_at, len(code)), 0, _CLONE))
    code.append((_JEQ, jump_to(enosys_at, len(code)), 0, _CLONE3))
    code.append((_RET, 0, 0, _RET_ALLOW))
    code.append((_LD_W_ABS, 0, 0, 16))                           # clone flags: args[0] (low)
    code.append((_JSET, 0, 1, _NAMESPACE_FLAGS))                 # any set: EPERM
    code.append((_RET, 0, 0, _RET_ERRNO | _EPERM))
    code.append((_RET, 0, 0, _RET_ALLOW))
    code.append((_RET, 0, 0, _RET_ERRNO | _ENOSYS))
    code.append((_RET, 0, 0, _RET_KILL_PROCESS))
    assert (code[eperm_at][3], code[enosys_at][3], code[kill_at][3]) == (
        _RET_ERRNO | _EPERM, _RET_ERRNO | _ENOSYS, _RET_KILL_PROCESS)
    return code


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
