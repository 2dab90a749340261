"""Inside a zygote sandbox's executor: the warm Python worker forked, not executed.

The executor starts its warm interpreter as ``python3 pywarm.py ...`` through
``subprocess.Popen``. In a zygote sandbox the executor already has the libraries
imported (it is a fork of the zygote), so ``install()`` gives ``sidecar.runner`` a
``Popen`` that, for that one command line only, forks and runs ``pywarm.main()``
in the child instead of executing a new interpreter: same pipes, same working
directory and environment, same ``preexec_fn`` (the user's limits), same pid to
wait for. What an ``exec`` would have reset is reset by hand: the process becomes
dumpable again (its own ``/proc/self`` stays readable), SIGINT raises
KeyboardInterrupt, numpy's global random state is reseeded (``random`` reseeds
itself after a fork), the standard streams are unbuffered (``PYTHONUNBUFFERED``),
``sys.path`` holds no executor or zygote entries. Every other command line goes to
the real ``Popen``. Right after that fork each side copies the pages the zygote's
calibration found it writes while serving a request (``sidecar/prefault.py``):
those copies are then not made during the request. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import subprocess
import sys
import types
from typing import Any

from sidecar import prefault

__all__ = ["install"]

_PR_SET_DUMPABLE = 4
_EXECUTOR_PATHS = ("/opt/k8si",)
#: The pages to copy right after the fork: the executor's and the worker's.
_prefault: dict[str, list[list[int]]] = {}


class _WarmPopen(subprocess.Popen):  # type: ignore[type-arg]
    """``Popen`` that forks the pre-imported interpreter for ``python3 .../pywarm.py``."""

    def _execute_child(self, *params: Any) -> None:
        # (args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
        #  creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, ...)
        args = params[0]
        argv = list(args) if isinstance(args, (list, tuple)) else []
        if len(argv) < 2 or not str(argv[1]).endswith("pywarm.py"):
            super()._execute_child(*params)  # type: ignore[misc]
            return
        preexec_fn, pass_fds, cwd, env = params[2], params[4], params[5], params[6]
        p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite = params[10:16]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                prefault.populate(_prefault.get("worker", []))
                _child(argv, stdio=(p2cread, c2pwrite, errwrite), pass_fds=tuple(pass_fds),
                       cwd=cwd, env=env, preexec_fn=preexec_fn)
            finally:
                os._exit(255)
        prefault.populate(_prefault.get("executor", []))
        self.pid = pid
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite,  # type: ignore[attr-defined]
                             errread, errwrite)


def _child(argv: list[str], *, stdio: tuple[int, int, int], pass_fds: tuple[int, ...],
           cwd: str | None, env: dict[str, str] | None, preexec_fn: Any) -> None:
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    keep = {0, 1, 2, *pass_fds}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own fd
                os.close(fd)
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env or {})
    if preexec_fn is not None:
        preexec_fn()
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    sys.dont_write_bytecode = True
    sys.path[:] = [os.path.dirname(argv[1]), *(p for p in sys.path[1:]
                                               if p not in _EXECUTOR_PATHS)]
    sys.argv = argv[1:]
    _reset_matplotlib()
    pywarm = sys.modules.get("sidecar.pywarm")
    if pywarm is None:
        import importlib

        pywarm = importlib.import_module("sidecar.pywarm")
    pywarm.main()


def _reset_matplotlib() -> None:
    """Forget the config dir the zygote used; the sandbox's own is set in the env."""
    matplotlib = sys.modules.get("matplotlib")
    for name in ("get_configdir", "get_cachedir"):
        cached = getattr(matplotlib, name, None) if matplotlib is not None else None
        clear = getattr(cached, "cache_clear", None)
        if callable(clear):
            clear()


def install(pages: dict[str, list[list[int]]] | None = None) -> None:
    """Give ``sidecar.runner`` the forking ``Popen`` (in the zygote sandbox's executor),
    and the pages to copy after the fork (``{"executor": ranges, "worker": ranges}``)."""
    from sidecar import runner

    _prefault.clear()
    _prefault.update(pages or {})

    shim = types.ModuleType("subprocess")
    shim.__dict__.update(vars(subprocess))
    shim.Popen = _WarmPopen  # type: ignore[attr-defined]
    runner.subprocess = shim  # type: ignore[attr-defined]
