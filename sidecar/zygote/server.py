"""The zygote: a Python with the libraries imported that forks into fresh sandboxes.

Started by the API (``app/backends/local/zygote.py``, its client) as root, with a
``SOCK_SEQPACKET`` control socket at fd 3. ``stage1`` (any Python) makes a private mount
namespace in which the runtime venv and the executor package (this package included)
appear at ``/opt/k8si/{python,sidecar}`` (the paths sandboxes see; the rest of /opt is
bound back as it was), then executes the venv's Python at ``/opt/k8si/python`` on
``main``. ``main`` imports the executor and the configured libraries once, freezes them
out of the garbage collector, rehearses the state capture and restore once (its forks
skip it), reports ready, then serves spawn requests. (Its heap stays in 4 KiB pages:
collapsed into 2 MiB pages, a fork was ~3 ms cheaper, but every first write to a shared
huge page during a request split it, which cost a warm ``print(1)`` ~1 ms of latency;
see BENCHMARKS.md.)

A spawn request (JSON, with the executor's listening socket and its log file as fds)
forks a child that joins the sandbox's cgroups, unshares mount, PID, network, IPC, UTS
and cgroup namespaces and forks PID 1 of the new PID namespace; the child stays as its
parent and exits with it. PID 1 builds the sandbox (``jail``) and runs the executor
(``sidecar.__main__.main``) with the warm worker forked from it (``worker``): no
interpreter start, no library import, and the executor's command line already parsed
here (the same for every sandbox alike). The API sends the calibration's pages once (a
``prefault_plan`` message, learnt by the API's calibration; see
``sidecar/prefault.py``); a spawn request with ``"prefault": true`` has both copy them
right after that fork. The reply carries a pidfd of the child. Every process dies
with its parent (``PR_SET_PDEATHSIG``): the sandbox with the child, the child with the
zygote, the zygote with the API. Standard library only (plus the sidecar and the
preloaded libraries).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import json
import os
import shutil
import socket
import sys
import traceback
from typing import Any

from . import jail, seccomp, worker

__all__ = ["BOOT", "main", "stage1"]

CONTROL_FD = 3
OPT = "/opt/k8si"
#: PID 1 of every zygote sandbox shows this command line, like nsjail's executor does.
BOOT = ("import sys; sys.dont_write_bytecode = True; "
        "sys.path[:0] = ['/opt/k8si']; "
        "from sidecar.zygote import server; server.main()")
_EXECUTOR_MODULES = ("sidecar.__main__", "sidecar.server", "sidecar.runner", "sidecar.pywarm",
                     "sidecar.prefault")
_MAX_MESSAGE = 1 << 20


def _bind(source: str, target: str, readonly: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        with open(target, "a"):
            pass
    jail.mount(source, target, None, jail.MS_BIND | jail.MS_REC)
    if readonly:
        jail.mount(None, target, None,
                    jail.MS_REMOUNT | jail.MS_BIND | jail.MS_RDONLY | jail.MS_NOSUID)


def stage1() -> None:
    """Private mount namespace with ``/opt/k8si``; then exec the zygote proper."""
    config = json.loads(sys.argv[1])
    # The imports take about a second of CPU: at a low priority while the API itself
    # starts (its first /health answer must not wait for them); back to 0 once ready.
    os.nice(10)
    jail.unshare(jail.CLONE_NEWNS)
    jail.mount(None, "/", None, jail.MS_REC | jail.MS_PRIVATE)
    old = os.open("/opt", os.O_PATH | os.O_DIRECTORY)
    entries = os.listdir(f"/proc/self/fd/{old}")
    jail.mount("none", "/opt", "tmpfs", jail.MS_NOSUID | jail.MS_NODEV, "size=1048576,mode=0755")
    for name in entries:  # the host's /opt as it was, beside /opt/k8si
        source, target = f"/proc/self/fd/{old}/{name}", f"/opt/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            _bind(source, target, readonly=False)
    os.close(old)
    for name, source in (("python", config["venv"]), ("sidecar", config["sidecar"]),
                         ("mplconfig", config["mplconfig"])):
        _bind(source, f"{OPT}/{name}", readonly=True)
    os.makedirs(f"{OPT}/home", exist_ok=True)  # the zygote's own matplotlib config
    jail.mount("none", f"{OPT}/home", "tmpfs", jail.MS_NOSUID | jail.MS_NODEV,
                "size=67108864,mode=0700")
    os.dup2(int(config["control_fd"]), CONTROL_FD)
    python = f"{OPT}/python/bin/python3"
    os.execve(python, [python, "-I", "-c", BOOT],  # noqa: S606
              {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg"})


def _preload(modules: list[str]) -> list[str]:
    seed, config_dir = f"{OPT}/mplconfig", f"{OPT}/home/matplotlib"
    if os.path.isdir(seed) and not os.path.exists(config_dir):
        shutil.copytree(seed, config_dir)
    os.environ["MPLCONFIGDIR"] = config_dir
    sys.path.insert(0, f"{OPT}/sidecar")  # pywarm imports pystate, pyrestore as top-level modules
    try:
        for name in _EXECUTOR_MODULES:
            importlib.import_module(name)
    finally:
        sys.path.remove(f"{OPT}/sidecar")
    failed = []
    for name in [*modules, "cloudpickle", "lz4.frame"]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (an optional library, missing or broken)
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    failed += sys.modules["pyrestore"].preload()  # its rehearsal, once for every worker
    _forget_matplotlib_dirs()
    return failed


def _forget_matplotlib_dirs() -> None:
    """matplotlib memoizes its config and cache dirs: sandboxes must find their own."""
    matplotlib = sys.modules.get("matplotlib")
    cached = getattr(matplotlib, "_logged_cached", None)
    for name, fmt in (("get_configdir", "CONFIGDIR=%s"), ("get_cachedir", "CACHEDIR=%s")):
        function = getattr(matplotlib, name, None)
        original = getattr(function, "__wrapped__", None)
        if cached is not None and original is not None:
            setattr(matplotlib, name, cached(fmt)(original))


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _move_high(fds: list[int]) -> list[int]:
    """The received fds moved above the ones PID 1 arranges (0-3)."""
    moved: list[int] = []
    for fd in fds:
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 100))
        os.close(fd)
    return moved


def _prefault_plan(pages: Any) -> dict[str, list[list[int]]]:
    """The calibration's pages (``sidecar/prefault.py``), sent once by the API."""
    from sidecar import prefault

    if not isinstance(pages, dict):
        raise ValueError("prefault must be {\"executor\": ranges, \"worker\": ranges}")
    return {side: prefault.parse_ranges(pages.get(side, [])) for side in ("executor", "worker")}


def _warm_executor_args(argv: list[str]) -> None:
    """Parse the executor's command line here, once for all sandboxes alike (memoized
    by ``sidecar.__main__.parse_args``): a fork finds it parsed. A bad one is left for
    the sandbox to fail on."""
    from sidecar.__main__ import parse_args

    with contextlib.suppress(Exception, SystemExit), contextlib.redirect_stderr(None):
        parse_args(tuple(argv))


def _sandbox(request: dict[str, Any], listen_fd: int, log_fd: int,
             pages: dict[str, list[list[int]]]) -> None:
    """PID 1 of the new namespaces: become the sandbox, then serve as its executor."""
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.dup2(listen_fd, CONTROL_FD)
    os.closerange(CONTROL_FD + 1, 1 << 16)
    jail.enter(request)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    worker.install(pages)
    from sidecar.__main__ import main as executor

    sys.argv = ["sidecar", *request["argv"]]
    executor(list(request["argv"]))


def _pid1(request: dict[str, Any], fds: list[int], pages: dict[str, list[list[int]]]) -> None:
    """PID 1 of a new PID namespace: cgroups, the other namespaces, then the sandbox."""
    jail.prctl(1, 9)  # PR_SET_PDEATHSIG: die with the zygote
    os.close(CONTROL_FD)
    listen_fd, log_fd = _move_high(fds)
    for procs in request["cgroup_procs"]:
        with open(procs, "w") as handle:
            handle.write("0")  # this process
    jail.unshare(jail.CLONE_FLAGS & ~jail.CLONE_NEWPID)
    _sandbox(request, listen_fd, log_fd, pages)


def _spawn(request: dict[str, Any], fds: list[int], own_pid_ns: int,
           pages: dict[str, list[list[int]]]) -> tuple[int, int]:
    """Fork straight into a new PID namespace: the child is its PID 1."""
    _warm_executor_args(list(request["argv"]))
    sys.stdout.flush()
    sys.stderr.flush()
    jail.unshare(jail.CLONE_NEWPID)  # for the next child only
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            jail.setns(own_pid_ns, jail.CLONE_NEWPID)  # children after it: back in ours
    if pid == 0:
        try:
            _pid1(request, fds, pages)
        except BaseException:  # noqa: BLE001 (a fork never returns into the zygote)
            with contextlib.suppress(Exception):
                traceback.print_exc()
                os.write(fds[-1], traceback.format_exc().encode())
        finally:
            os._exit(70)
    return pid, os.pidfd_open(pid)


def main() -> None:
    jail.prctl(1, 9)  # die with the API
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=CONTROL_FD)
    config = json.loads(control.recv(_MAX_MESSAGE))
    failed = _preload(list(config.get("preload", [])))
    seccomp.prepare()  # the filter's program, built once for every sandbox
    gc.freeze()  # the imports stay shared with every fork: no collection touches them
    os.setpriority(os.PRIO_PROCESS, 0, 0)  # sandboxes run at the normal priority
    control.send(json.dumps({"ready": True, "failed": failed, "pid": os.getpid()}).encode())
    control.settimeout(1.0)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    plan: dict[str, list[list[int]]] = {}
    while True:
        _reap()
        try:
            data, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 4)
        except TimeoutError:
            continue
        if not data:
            return  # the API closed its end
        try:
            request = json.loads(data)
            if "prefault_plan" in request:  # the calibration's pages, for every later spawn
                plan = _prefault_plan(request["prefault_plan"])
                control.send(json.dumps({"ok": True}).encode())
                continue
            pid, pidfd = _spawn(request, fds, own_pid_ns,
                                plan if request.get("prefault") else {})
        except Exception as exc:  # noqa: BLE001 (reported to the API; the zygote goes on)
            control.send(json.dumps({"ok": False, "error": repr(exc)}).encode())
            continue
        finally:
            for fd in fds:
                os.close(fd)
        try:
            socket.send_fds(control, [json.dumps({"ok": True, "pid": pid}).encode()], [pidfd])
        finally:
            os.close(pidfd)
