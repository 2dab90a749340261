"""Process hardening: the executor's own (non-dumpable) and the user program's.

``harden_executor`` runs once at start-up. ``ChildLimits.apply`` runs in the forked
child between fork and exec: new session, umask 077, ``no_new_privs``,
``oom_score_adj`` 1000 so the OOM killer picks user code first (a failure to set it
fails the start), rlimits, default signal dispositions. And reading how a run ended
against its limits: the memory cgroup's OOM-kill counter (``OomCounter``) and the
wait status (``exit_fields``). Standard library only (ctypes for prctl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
from dataclasses import dataclass

__all__ = ["ChildLimits", "OomCounter", "exit_fields", "harden_executor", "signal_name"]

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def harden_executor() -> None:
    """Make the executor non-dumpable and immune to the user's SIGINT/SIGTERM.

    Non-dumpable: same-uid user code can neither ptrace it nor read its
    ``/proc/1/{mem,environ,root}``. As PID 1 of a PID namespace it only receives
    signals it has handlers for; ignoring SIGINT removes Python's default one.
    """
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class ChildLimits:
    """Resource limits applied to every process the executor starts for the user."""

    cpu_seconds: int
    file_size_bytes: int
    open_files: int = 1024
    #: RLIMIT_NPROC, only meaningful where the sandbox's uid is its own.
    processes: int | None = None
    #: RLIMIT_AS, the fallback memory limit where no cgroup holds the sandbox.
    address_space_bytes: int | None = None
    #: Leave RLIMIT_CPU's hard limit unlimited: the warm Python worker, whose start is
    #: bounded by ``cpu_seconds`` and which lowers both limits itself before it runs the
    #: user's code, to that run's own timeout (a hard limit, once lowered, stays).
    cpu_hard_unlimited: bool = False

    def apply(self) -> None:
        """Runs in the child after fork, before exec: only async-signal-safe-ish calls."""
        os.setsid()
        os.umask(0o077)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        # The child inherits the executor's non-dumpable flag, which makes its /proc
        # files root's: its own oom_score_adj could not be written. It becomes
        # dumpable here, as the exec right after would make it anyway (no other
        # program of the user runs while the executor forks one). A failure is loud:
        # the run fails rather than the OOM killer picking the executor first.
        _prctl(_PR_SET_DUMPABLE, 1)
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        hard = resource.RLIM_INFINITY if self.cpu_hard_unlimited else self.cpu_seconds + 1
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, hard))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_bytes, self.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        if self.processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))
        if self.address_space_bytes is not None:
            limit = self.address_space_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class OomCounter:
    """OOM kills recorded for this sandbox's memory cgroup (v2 ``memory.events`` or v1
    ``memory.oom_control``). The file is opened once, each count is one ``pread``: the
    end of every run reads it on the way to the answer."""

    def __init__(self, cgroup_dir: str | None) -> None:
        self._fd: int | None = None
        for name in ("memory.events", "memory.oom_control") if cgroup_dir else ():
            try:
                self._fd = os.open(os.path.join(cgroup_dir or "", name),
                                   os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            break

    def count(self) -> int | None:
        """The kills so far; None if unknown (no cgroup, or it cannot be read)."""
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, 4096, 0)
        except OSError:
            return None
        for line in data.splitlines():
            key, _, value = line.partition(b" ")
            if key == b"oom_kill" and value.strip().isdigit():
                return int(value)
        return None


def signal_name(number: int) -> str:
    """``SIGKILL``; a real-time signal (no name of its own) as ``SIGRTMIN+n``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"SIG{number}"


def exit_fields(status: int) -> tuple[int | None, str | None]:
    """A wait status as the result's (exit code, signal name): one of them is None."""
    if os.WIFSIGNALED(status):
        return None, signal_name(os.WTERMSIG(status))
    return os.WEXITSTATUS(status), None
