"""The warm Python worker: imports the libraries first, then runs one program.

Started by the executor when the sandbox starts (before it is claimed), already
inside the user's limits and environment. It imports the configured libraries (and
the state libraries), reports ``ready`` on its status fd, then blocks
on stdin for the one message: a JSON line ``{"path", "args", "timeout", "state"?}``
followed by the raw state blob to restore, if any. It runs that file as ``__main__``
the way ``python3 main.py`` would (uncaught exception: traceback and exit status 1).

When the program is over (output flushed, ``atexit`` run), the worker closes its
stdout and stderr and reports ``{"done": status, "cpu", "max_rss"}`` on the status fd
(kept as a close-on-exec fd numbered 100 or more); with ``--stop-after-done`` (its
executor is PID 1 and sweeps the namespace) it then stops itself rather than exit,
and the executor kills it after answering: the kernel's teardown of the ~100 MB
process is then off the answer's path. A program that writes there itself only ends
its own run early, as exiting would.

Python state: the blob is restored into the fresh namespace before the code runs
(``sidecar/pyrestore.py``); afterwards (also after ``sys.exit`` and, when
``state.on_error`` is set, after an uncaught exception) the namespace is captured
into ``state.blob_path`` and the outcome written to ``state.report_path``
(``sidecar/pystate.py``). Both happen here, in the user's process, under the same
limits as the code.

With ``--calibrate`` (a calibration sandbox, ``sidecar/prefault.py``) the worker also
writes which pages it wrote between "ready" and "done" to ``prefault.WORKER_PAGES_FILE``
beside the program.

Usage: ``python3 pywarm.py STATUS_FD WORKDIR PRELOAD[,PRELOAD...] [MPL_SEED_DIR] [--calibrate]
[--stop-after-done] [--tools-fd=N]``
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import gc
import importlib
import json
import os
import resource
import shutil
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecar import pyrestore, pystate
else:  # run as a script from the sidecar directory: top-level modules there
    pystate = importlib.import_module("pystate")
    pyrestore = importlib.import_module("pyrestore")

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The status fd moves to the first free fd from here (the program's own start at 3).
_DONE_FD_MIN = 100


def _seed_matplotlib_cache(seed_dir: str) -> None:
    """Copy a font cache built at set-up time, so no sandbox rebuilds it."""
    target = os.environ.get("MPLCONFIGDIR")
    if target and os.path.isdir(seed_dir) and not os.path.exists(target):
        shutil.copytree(seed_dir, target)


def _preload(modules: list[str]) -> list[str]:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional library that is missing or broken
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def _keep_for_done(status_fd: int) -> int:
    """The status fd, kept for the "done" report: close-on-exec, out of the way of the
    program's own fds (numbered 100 or more where the fd limit allows)."""
    try:
        done_fd = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, _DONE_FD_MIN)
    except OSError:  # a low RLIMIT_NOFILE: keep it where it is
        os.set_inheritable(status_fd, False)
        return status_fd
    os.close(status_fd)
    return done_fd


def _user_traceback(exc: BaseException, path: str) -> None:
    """Print the traceback from the program's first frame, without the frames of the
    executor's own files (this worker, the tool functions of ``ptc_sandbox``)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    first = next((i for i, frame in enumerate(frames)
                  if frame.tb_frame.f_code.co_filename == path), len(frames))
    chain = None
    for frame in reversed(frames[first:]):
        if os.path.dirname(frame.tb_frame.f_code.co_filename) != _HERE:
            chain = types.TracebackType(chain, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    traceback.print_exception(type(exc), exc, chain)


def _read_message() -> tuple[dict[str, Any], memoryview]:
    """The JSON line, and the raw state blob after it (empty when there is none)."""
    data = sys.stdin.buffer.read()
    end = data.find(b"\n")
    if end < 0:
        return json.loads(data), memoryview(b"")
    return json.loads(data[:end]), memoryview(data)[end + 1:]


def _run(path: str, namespace: dict[str, Any],
         program: Callable[[], None] | None = None) -> tuple[SystemExit | None, bool]:
    """Run the program (or ``program``, which runs it); the exit to raise afterwards, and
    whether the run failed."""
    try:
        if program is not None:
            program()
        else:
            with open(path, "rb") as handle:
                code = compile(handle.read(), path, "exec")
            exec(code, namespace)
    except SystemExit as exc:
        return exc, exc.code not in (None, 0)
    except BaseException as exc:  # the user's uncaught exception, reported like python3 does
        _user_traceback(exc, path)
        return SystemExit(1), True
    return None, False


def _tools_fd(argv: list[str]) -> int | None:
    """``--tools-fd=N``: the worker's end of the tool-call channel, moved out of the
    program's way and closed on exec (``sidecar/ptc_sandbox.py`` uses it)."""
    for arg in argv:
        if arg.startswith("--tools-fd="):
            return _keep_for_done(int(arg.partition("=")[2]))
    return None


class _Calibration:
    """The pages this worker writes while it serves the run (calibration sandboxes)."""

    def __init__(self) -> None:
        self.prefault = importlib.import_module("prefault")
        self.before: set[int] = set()

    def start(self) -> None:
        self.before = self.prefault.own_pages()

    def write(self, program: str) -> None:
        pages = self.prefault.own_pages() - self.before
        target = os.path.join(os.path.dirname(program), self.prefault.WORKER_PAGES_FILE)
        with open(target, "w") as handle:
            json.dump(self.prefault.as_ranges(pages), handle)


def main() -> None:
    calibration = _Calibration() if "--calibrate" in sys.argv else None
    stop_after_done = "--stop-after-done" in sys.argv
    tools_fd = _tools_fd(sys.argv)
    argv = [arg for arg in sys.argv if arg not in ("--calibrate", "--stop-after-done")
            and not arg.startswith("--tools-fd=")]
    status_fd, workdir = int(argv[1]), argv[2]
    preload = [m for m in argv[3].split(",") if m]
    if len(argv) > 4:
        _seed_matplotlib_cache(argv[4])
    failed = _preload(preload) + pyrestore.preload()
    # What the imports made lives as long as the process: no collection walks it again
    # (the user's collections and the one at exit stay cheap).
    gc.freeze()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ready = {"ready": True, "cpu": usage.ru_utime + usage.ru_stime, "failed": failed}
    os.write(status_fd, json.dumps(ready).encode() + b"\n")
    done_fd = _keep_for_done(status_fd)
    if calibration is not None:
        calibration.start()

    message, blob = _read_message()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    tools: dict[str, Any] | None = message.get("tools")
    if tools is not None and tools_fd is not None:
        ptc_sandbox = importlib.import_module("ptc_sandbox")  # before sys.path changes
    elif tools_fd is not None:
        os.close(tools_fd)  # an ordinary run: no tool channel
        tools = None
    # A programmatic run's timeout caps each run between two rounds of tool calls.
    rounds = 1 + int(tools["max_rounds"]) if tools is not None else 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_limit = int(usage.ru_utime + usage.ru_stime + message["timeout"] * rounds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:  # set at the worker's start: it cannot be raised
        cpu_limit = min(cpu_limit, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))

    path: str = message["path"]
    sys.argv = [path, *message["args"]]
    sys.path[0] = workdir
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    state: dict[str, Any] | None = message.get("state")
    problems: list[dict[str, str]] = []
    timings: dict[str, float] = {}
    if state and len(blob):
        began = time.perf_counter()
        problems = pyrestore.restore(blob, module.__dict__, int(state["max_raw_bytes"]))
        timings["restore"] = time.perf_counter() - began
    del blob  # the blob's memory goes back before the user's code runs
    program = None if tools is None else functools.partial(
        ptc_sandbox.run, path, module.__dict__, tools_fd, tools["names"])
    exit_, run_failed = _run(path, module.__dict__, program)
    if state and state.get("capture"):
        if run_failed and not state.get("on_error"):
            pystate.report(state, "skipped", problems, timings)
        else:
            pystate.capture(module.__dict__, state, problems, timings)
    _finish(exit_, module.__dict__, done_fd,
            (lambda: calibration.write(path)) if calibration is not None else None,
            stop_after_done=stop_after_done)


def _exit_status(exit_: SystemExit | None) -> int:
    """The status ``python3`` exits with for this ``SystemExit`` (printing a message one)."""
    code = exit_.code if exit_ is not None else None
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if -(2**31) <= code < 2**31 else 0xFF
    with contextlib.suppress(Exception):  # a broken stderr: the status still says it failed
        print(code, file=sys.stderr)
    return 1


def _finish(exit_: SystemExit | None, namespace: dict[str, Any], done_fd: int,
            before_done: Callable[[], None] | None = None, *,
            stop_after_done: bool = False) -> None:
    """End the process as ``python3`` would, without tearing the libraries down.

    What a program can observe of the interpreter's shutdown is kept: non-daemon
    threads are waited for, ``atexit`` functions run, the program's objects are
    released (so files it left open are flushed and closed) and the standard streams
    are flushed (a failed flush exits with 120, as python3 does). The rest of the
    shutdown (tearing down numpy, pandas, matplotlib: about 0.1 s) is skipped with
    ``os._exit``, after the "done" report; with ``stop_after_done`` the worker stops
    after the report and its executor kills it once it has answered (see the
    module docstring).
    """
    status = _exit_status(exit_)
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    namespace.clear()
    gc.collect()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            status = 120 if status == 0 else status
    if before_done is not None:
        before_done()
    if _report_done(done_fd, status) and stop_after_done:
        os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(status)


def _report_done(done_fd: int, status: int) -> bool:
    """Close stdout and stderr (their pipes end here), then tell the executor; False
    when the report could not be written (the executor then waits for the exit)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    done = {"done": status, "cpu": cpu, "max_rss": max(own.ru_maxrss, children.ru_maxrss)}
    try:
        os.write(done_fd, json.dumps(done).encode() + b"\n")
    except OSError:  # the program closed it: the executor waits for the exit
        return False
    return True


if __name__ == "__main__":
    main()
