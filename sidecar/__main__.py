"""Entry point of the executor: ``python3 -m sidecar --lang py --listen-fd 3 ...``.

It is PID 1 of its sandbox. It hardens itself, starts the warm interpreter if the
language has one, and serves the executor contract until the sandbox is destroyed.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import socket
import sys

from .files import WorkDir
from .languages import LANGUAGES
from .limits import harden_executor
from .runner import Runner, RunnerConfig
from .server import ExecutorServer, log

DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp"}


@functools.lru_cache(maxsize=8)
def parse_args(argv: tuple[str, ...]) -> argparse.Namespace:
    """The command line, parsed once per distinct ``argv``: a zygote parses its
    sandboxes' command line before it forks them (``sidecar/zygote/server.py``), so no
    sandbox spends ~2 ms building and running argparse. Callers only read the result."""
    parser = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    parser.add_argument("--lang", required=True, choices=sorted(LANGUAGES))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen-fd", type=int, help="an already listening socket (inherited)")
    where.add_argument("--unix", help="bind a unix socket at this path")
    where.add_argument("--tcp", help="bind HOST:PORT (:PORT: every address, IPv4 and IPv6)")
    parser.add_argument("--workdir", default="/mnt/data")
    parser.add_argument("--build-dir", default="/tmp/.k8si-build")
    parser.add_argument("--max-output-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--max-upload-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--file-size-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--processes", type=int, default=None,
                        help="RLIMIT_NPROC; only where the sandbox uid is its own")
    parser.add_argument("--address-space-bytes", type=int, default=None,
                        help="RLIMIT_AS fallback where no memory cgroup holds the sandbox")
    parser.add_argument("--compile-timeout", type=float, default=60.0)
    parser.add_argument("--cgroup-dir", default=None,
                        help="this sandbox's memory cgroup; 'auto': the container's own "
                             "(cgroup v2 at /sys/fs/cgroup, v1 at /sys/fs/cgroup/memory)")
    parser.add_argument("--preload", default="numpy,pandas,matplotlib,matplotlib.pyplot")
    parser.add_argument("--mpl-seed-dir", default=None)
    parser.add_argument("--calibrate", action="store_true",
                        help="record the pages the execution writes (GET /calibration)")
    parser.add_argument("--serve-unbound", action="store_true",
                        help="serve requests without a token until one binds the executor "
                             "(tests and development only: the API always sends one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="the user's environment, on top of a minimal default")
    return parser.parse_args(argv)


def memory_cgroup(argument: str | None) -> str | None:
    """The memory cgroup directory whose OOM kill counter tells ``oom`` from a crash.

    ``auto`` (a container, where the runtime mounts its own cgroup): the directory
    that has v2's ``memory.events`` or v1's ``memory.oom_control``; None if neither.
    """
    if argument != "auto":
        return argument
    for directory, marker in (("/sys/fs/cgroup", "memory.events"),
                              ("/sys/fs/cgroup/memory", "memory.oom_control")):
        if os.path.exists(os.path.join(directory, marker)):
            return directory
    return None


def _listener(args: argparse.Namespace) -> socket.socket:
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
        os.set_inheritable(listener.fileno(), False)
        return listener
    if args.unix:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(args.unix)
        finally:
            os.umask(old_umask)
    else:
        listener = tcp_listener(args.tcp)
    listener.listen(16)
    return listener


def tcp_listener(address: str) -> socket.socket:
    """A TCP socket bound to ``HOST:PORT``: ``0.0.0.0:8080`` (IPv4), ``[::1]:8080`` (IPv6),
    or ``:8080``, every address of both families where the host has IPv6 (an IPv6-only
    cluster gives pods no IPv4 address), else every IPv4 one."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if host:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, int(port)), family=family)
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(("::", int(port)), family=socket.AF_INET6,
                                        dualstack_ipv6=True)
        except OSError as exc:  # IPv6 turned off in this network namespace: IPv4 only
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise  # the port is taken, say: not a reason to serve IPv4 only
    return socket.create_server(("0.0.0.0", int(port)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(tuple(sys.argv[1:] if argv is None else argv))
    harden_executor()
    if os.getpid() != 1:
        log("warning", message="not PID 1 of a sandbox: a timeout kills the program's "
                               "session only, not daemons that left it")
    # The sandbox's own host name: "sandbox" locally, the pod's name in a cluster.
    user_env = {**DEFAULT_ENV, "HOSTNAME": socket.gethostname()}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env expects KEY=VALUE, got {item!r}")
        user_env[key] = value
    config = RunnerConfig(
        workdir=args.workdir, build_dir=args.build_dir, max_output_bytes=args.max_output_bytes,
        memory_mb=args.memory_mb, file_size_bytes=args.file_size_bytes,
        processes=args.processes, address_space_bytes=args.address_space_bytes,
        compile_timeout=args.compile_timeout, cgroup_dir=memory_cgroup(args.cgroup_dir),
        user_env=user_env,
        preload=tuple(m for m in args.preload.split(",") if m), mpl_seed_dir=args.mpl_seed_dir,
        calibrate=args.calibrate,
    )
    os.chdir(args.workdir)
    runner = Runner(config, LANGUAGES[args.lang])
    runner.warm_up()
    workdir = WorkDir(args.workdir, max_file_bytes=args.max_upload_bytes)
    server = ExecutorServer(_listener(args), runner, workdir,
                            max_upload_bytes=args.max_upload_bytes,
                            token_required=not args.serve_unbound)
    log("ready", lang=args.lang, pid=os.getpid())
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
