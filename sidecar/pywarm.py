"""The warm Python worker: imports the libraries first, then runs one program.

Started by the executor when the sandbox starts (before it is claimed), already
inside the user's limits and environment. It imports the configured libraries,
reports ``ready`` on its status fd and closes it, then blocks on stdin for the one message
``{"path", "args", "timeout"}``, and runs that file as ``__main__`` the way
``python3 main.py`` would (uncaught exception: traceback and exit status 1).

Usage: ``python3 pywarm.py STATUS_FD WORKDIR PRELOAD[,PRELOAD...] [MPL_SEED_DIR]``
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import sys
import traceback
import types


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


def _user_traceback(exc: BaseException) -> None:
    """Print the traceback without this worker's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def main() -> None:
    status_fd, workdir = int(sys.argv[1]), sys.argv[2]
    preload = [m for m in sys.argv[3].split(",") if m]
    if len(sys.argv) > 4:
        _seed_matplotlib_cache(sys.argv[4])
    failed = _preload(preload)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ready = {"ready": True, "cpu": usage.ru_utime + usage.ru_stime, "failed": failed}
    os.write(status_fd, json.dumps(ready).encode() + b"\n")
    os.close(status_fd)  # the user's program holds no fd but 0, 1 and 2

    message = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_limit = int(usage.ru_utime + usage.ru_stime + message["timeout"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))

    path: str = message["path"]
    with open(path, "rb") as handle:
        source = handle.read()
    sys.argv = [path, *message["args"]]
    sys.path[0] = workdir
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    try:
        code = compile(source, path, "exec")
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # the user's uncaught exception, reported like python3 does
        _user_traceback(exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
