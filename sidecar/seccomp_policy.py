"""The sandbox's seccomp policy, written once, for both sandbox factories.

nsjail gets it as kafel text (``kafel()``), the zygote installs it as a classic BPF
program (``bpf_program()``, x86-64). The policy:

- the syscalls of ``DENIED`` answer EPERM: namespaces, mounts, keyrings, BPF, module
  loading, perf, io_uring, ``memfd_secret``, clock setting, cross-process memory
  and fd access (``process_vm_*``, ``pidfd_getfd``, ``process_madvise``), ptrace, and
  the rest of what a container runtime's default profile refuses that a code runner
  never needs;
- ``clone`` with any namespace flag answers EPERM, ``clone3`` answers ENOSYS (libc
  then falls back to ``clone``, whose flags can be checked);
- ``socket``/``socketpair`` of any family but ``AF_UNIX``, ``AF_INET``, ``AF_INET6``
  and ``AF_NETLINK`` with protocol ``NETLINK_ROUTE`` answer EAFNOSUPPORT: no vsock
  (which a network namespace does not isolate), packet, alg, key, bluetooth... and no
  other netlink protocol (generic netlink, audit, uevents, xfrm, sock_diag). Route
  netlink stays because libc asks it for the interfaces (``getifaddrs``,
  ``if_nameindex``, ``getaddrinfo`` with ``AI_ADDRCONFIG``), and so do Node's and
  Go's interface listings; in the sandbox's network namespace it shows ``lo`` only,
  and changing anything through it needs ``CAP_NET_ADMIN``, which no sandbox has;
- everything else is allowed.

The BPF form is stricter in two places: another architecture's syscalls (32-bit
``int 0x80``) kill the process, and x32 syscall numbers answer ENOSYS, so neither
ABI is a way around the list. Standard library only: the zygote imports it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AF_NETLINK", "ALLOWED_SOCKET_FAMILIES", "DENIED", "NETLINK_ROUTE", "bpf_program",
           "kafel"]

#: Refused with EPERM: x86-64 numbers (asm/unistd_64.h) by name.
DENIED = {
    # mounts, namespaces, root changes
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
    "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    # kernel surfaces: keyrings, BPF, perf, io_uring, userfaultfd, modules, kexec
    "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "userfaultfd": 323, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "kexec_file_load": 320, "memfd_secret": 447,
    # the machine: clocks, reboot, swap, accounting, quotas, hostnames, I/O ports
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "sethostname": 170, "setdomainname": 171, "iopl": 172,
    "ioperm": 173, "syslog": 103, "settimeofday": 164, "clock_settime": 227,
    "clock_adjtime": 305, "adjtimex": 159, "vhangup": 153, "uselib": 134, "ustat": 136,
    "sysfs": 139, "lookup_dcookie": 212, "nfsservctl": 180, "fanotify_init": 300,
    # other processes: tracing, their memory, their files
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "pidfd_getfd": 438,
    "process_madvise": 440,
}
#: Families ``socket`` and ``socketpair`` may use; anything else: EAFNOSUPPORT.
ALLOWED_SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
#: ``AF_NETLINK`` is allowed with this protocol only (``NETLINK_ROUTE``).
AF_NETLINK, NETLINK_ROUTE = 16, 0
#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x7E020000

#: Where kafel (nsjail's policy language) names a syscall differently.
_KAFEL_NAMES = {"umount2": "umount"}
_CLONE, _CLONE3, _SOCKET, _SOCKETPAIR = 56, 435, 41, 53
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
#: seccomp_data offsets: arch, syscall number, low words of args[0] and args[2]
_ARCH, _NR, _ARG0, _ARG2 = 4, 0, 16, 32


def kafel() -> str:
    """The policy as nsjail's kafel text (syscall names: portable across architectures)."""
    families = " && ".join([*(f"family != {n}" for n in ALLOWED_SOCKET_FAMILIES.values()),
                            f"(family != {AF_NETLINK} || protocol != {NETLINK_ROUTE})"])
    names = sorted(_KAFEL_NAMES.get(name, name) for name in DENIED)
    return (f"ERRNO({_EPERM}) {{ {', '.join(names)}, "
            f"clone {{ (clone_flags & {CLONE_NAMESPACE_FLAGS:#x}) != 0 }} }} "
            f"ERRNO({_EAFNOSUPPORT}) {{ socket {{ {families} }}, "
            f"socketpair {{ {families} }} }} "
            f"ERRNO({_ENOSYS}) {{ clone3 }} DEFAULT ALLOW")


def bpf_program() -> list[tuple[int, int, int, int]]:
    """The policy as classic BPF (code, jt, jf, k) for x86-64 (jumps count from the next).

    Written with labels: ``("jeq", value, label)`` jumps to ``label`` when the
    accumulator equals ``value`` and falls through otherwise; the labels are resolved
    to offsets at the end.
    """
    families = sorted(ALLOWED_SOCKET_FAMILIES.values())
    source: list[tuple[Any, ...]] = [
        ("ld", _ARCH), ("jne", _AUDIT_ARCH_X86_64, "kill"),
        ("ld", _NR), ("jge", _X32_BIT, "enosys"),
        *(("jeq", number, "eperm") for number in sorted(DENIED.values())),
        ("jeq", _CLONE, "clone"), ("jeq", _CLONE3, "enosys"),
        ("jeq", _SOCKET, "socket"), ("jeq", _SOCKETPAIR, "socket"),
        ("ret", _RET_ALLOW),
        ("label", "clone"), ("ld", _ARG0), ("jset", CLONE_NAMESPACE_FLAGS, "eperm"),
        ("ret", _RET_ALLOW),
        ("label", "socket"), ("ld", _ARG0),
        *(("jeq", family, "allow") for family in families),
        ("jeq", AF_NETLINK, "netlink"), ("ret", _RET_ERRNO | _EAFNOSUPPORT),
        ("label", "netlink"), ("ld", _ARG2), ("jeq", NETLINK_ROUTE, "allow"),
        ("ret", _RET_ERRNO | _EAFNOSUPPORT),
        ("label", "allow"), ("ret", _RET_ALLOW),
        ("label", "eperm"), ("ret", _RET_ERRNO | _EPERM),
        ("label", "enosys"), ("ret", _RET_ERRNO | _ENOSYS),
        ("label", "kill"), ("ret", _RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    instructions: list[tuple[Any, ...]] = []
    for item in source:
        if item[0] == "label":
            labels[str(item[1])] = len(instructions)
        else:
            instructions.append(item)

    def offset(label: str, here: int) -> int:
        jump = labels[label] - here - 1
        if not 0 <= jump < 256:
            raise ValueError(f"seccomp jump to {label} out of range: {jump}")
        return jump

    code: list[tuple[int, int, int, int]] = []
    for here, item in enumerate(instructions):
        op = item[0]
        if op == "ld":
            code.append((_LD_W_ABS, 0, 0, int(item[1])))
        elif op == "ret":
            code.append((_RET, 0, 0, int(item[1])))
        else:  # a conditional jump: (op, value, label)
            value, target = int(item[1]), offset(str(item[2]), here)
            kind = {"jeq": (_JEQ, target, 0), "jne": (_JEQ, 0, target),
                    "jge": (_JGE, target, 0), "jset": (_JSET, target, 0)}[op]
            code.append((kind[0], kind[1], kind[2], value))
    return code
