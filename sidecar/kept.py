"""A kept sandbox (runtime sessions, the ``stateful`` profile): ready for the next run.

An ordinary sandbox runs one execution. After ``POST /keep`` (asked for by the API
once, before the first execution) the sandbox accepts further ``/execute`` calls, each
a new process of the same sandbox: ``/mnt/data`` stays as the last run left it, the
scratch space is wiped. Between two runs this module makes the sandbox ready again,
while the execution lock is still held (a next ``/execute`` waits for it):

1. the previous program is reaped (as PID 1 the sweep already killed its whole tree:
   nothing of the user's runs any more, so nothing writes to ``/mnt/data``);
2. the scratch space is emptied: the build dir always, and ``/tmp`` and ``/dev/shm``
   as a whole when this executor is PID 1 of its sandbox (never the host's of a
   development run); entries are removed without following links, directories made traversable
   first (code may have left a ``chmod 000`` tree behind);
3. the warm interpreter (Python) is started again, so the next run gets a fresh
   ``__main__`` with the libraries imported (its variables come back through the
   state blob, as across ordinary executions).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable

from .runner import Runner, WarmUpError

__all__ = ["rearm", "scratch_dirs", "wipe"]

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def scratch_dirs(build_dir: str) -> tuple[str, ...]:
    """What is wiped between runs: the build dir's parent (``/tmp``) and ``/dev/shm``
    inside a sandbox, else (a development run, not PID 1) the build dir only."""
    if os.getpid() == 1:
        scratch = os.path.dirname(build_dir.rstrip("/")) or "/tmp"
        return (scratch, "/dev/shm") if os.path.isdir("/dev/shm") else (scratch,)
    return (build_dir,)


def wipe(path: str) -> int:
    """Remove everything inside ``path`` (kept itself); the number of entries removed.
    Links are removed, never followed; a vanished entry is not an error."""
    try:
        fd = os.open(path, _OPEN_DIR)
    except FileNotFoundError:
        return 0
    try:
        return _wipe_fd(fd)
    finally:
        os.close(fd)


def _wipe_fd(dir_fd: int) -> int:
    removed = 0
    with os.scandir(dir_fd) as scan:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
    for name, is_dir in names:
        if is_dir:
            with contextlib.suppress(OSError):  # make it traversable and writable
                os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd, follow_symlinks=False)
            try:
                sub = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            try:
                removed += _wipe_fd(sub)
            finally:
                os.close(sub)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(name, dir_fd=dir_fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        removed += 1
    return removed


def rearm(runner: Runner, dirs: tuple[str, ...], lock: threading.Lock,
          log: Callable[..., None]) -> None:
    """Make the sandbox ready for its next run (see the module's docstring), then
    release the execution lock the finished run still holds. A failure is logged: the
    next run then fails as a sandbox failure (the API replaces the sandbox)."""
    try:
        runner.reap()
        removed = sum(wipe(path) for path in dirs)
        runner.rearm()
        log("kept.ready", scratch_removed=removed)
    except (OSError, WarmUpError) as exc:
        log("kept.rearm_failed", error=str(exc))
    finally:
        lock.release()
