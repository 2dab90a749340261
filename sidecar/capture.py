"""Reading one running program: its output under caps, its exit, and the sweep after it.

``capture`` reads stdout and stderr with a selector until the program exits, a
stream passes its cap, the timeout expires, or whoever receives the output live
goes away. Each stream keeps at most ``cap`` bytes. When an ``OutputListener`` is
given, every kept piece is also handed to it as it arrives, decoded by an
incremental UTF-8 decoder per stream (a character split across two reads is
never mangled); streamed output counts toward the same cap. The program's exit
is watched through a pidfd. When it ends, times out, floods or is abandoned, the
**whole** tree is killed: as PID 1 of its namespace the executor sweeps with
``kill(-1, SIGKILL)`` (a ``setsid`` double-forked daemon dies too), then reaps.

A ``done_fd`` (the warm Python worker's status pipe) may report the end earlier:
the worker has closed its stdout and stderr and stopped itself (``SIGSTOP``), its
status and usage in the report. As PID 1, the executor then stops every process of
the namespace (``kill(-1, SIGSTOP)``: nothing of the user's runs or writes any more),
waits until each is stopped or dead, reads the pipes to their end and answers; what
it stopped is killed after the answer (the sandbox's destruction, or ``reap_later``
before a kept sandbox's next run). Tearing down the ~100 MB worker takes the kernel a
millisecond or two of CPU: done before the answer, on two cores it delayed it by as
much (see BENCHMARKS.md).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Capture", "Done", "OutputListener", "Streams", "capture", "finish", "freeze_all",
           "kill_tree", "read_done", "reap_later"]

_READ_CHUNK = 65536


class OutputListener(Protocol):
    """Receives a program's output while it runs (the streaming ``/execute``)."""

    def output(self, stream: str, text: str) -> None:
        """A decoded piece of ``stream`` (``stdout`` or ``stderr``), in order."""

    def hangup_fd(self) -> int | None:
        """An fd that becomes readable when the receiver may have gone away."""

    def hung_up(self) -> bool:
        """True when the receiver is gone: the program is then stopped."""


@dataclass
class Capture:
    """What reading one program collected."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    truncated: str | None = None  # "stdout" or "stderr": the stream that hit the cap
    timed_out: bool = False
    #: The live receiver went away and the program was stopped.
    abandoned: bool = False
    exit_status: int = 0
    cpu_time: float = 0.0
    max_rss: int = 0
    wall_time: float = 0.0
    #: The program reported its end and was stopped, not killed: killed after the
    #: answer (``reap_later``, or the sandbox's destruction).
    unreaped: int | None = None


class Streams:
    """The program's two pipes: capped buffers, and the decoders feeding the listener."""

    def __init__(self, process: subprocess.Popen[bytes], result: Capture, cap: int,
                 listener: OutputListener | None) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.names = {process.stdout.fileno(): "stdout", process.stderr.fileno(): "stderr"}
        self.buffers = {"stdout": result.stdout, "stderr": result.stderr}
        self.result = result
        self.cap = cap
        self.listener = listener
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace")
                         for name in self.buffers}

    def read(self, fd: int) -> bool:
        """Read one chunk; False at EOF. Marks the capture when a stream passes its cap."""
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return False
        name = self.names[fd]
        buffer = self.buffers[name]
        kept = chunk[:self.cap - len(buffer)]
        buffer += kept
        if len(kept) < len(chunk):
            self.result.truncated = name
        self._emit(name, kept)
        return True

    def flush(self) -> None:
        """Hand over what the decoders still hold (an incomplete character as U+FFFD)."""
        for name in self.buffers:
            self._emit(name, b"", final=True)

    def _emit(self, name: str, data: bytes, final: bool = False) -> None:
        if self.listener is None or self.result.abandoned:
            return
        text = self.decoders[name].decode(data, final)
        if text:
            self.listener.output(name, text)


def capture(process: subprocess.Popen[bytes], timeout: float, started: float, cap: int,
            listener: OutputListener | None = None, *, done_fd: int | None = None) -> Capture:
    """Read both streams until the program exits, floods, runs out of time or is abandoned."""
    assert process.stdout is not None and process.stderr is not None
    result = Capture()
    streams = Streams(process, result, cap, listener)
    pidfd = os.pidfd_open(process.pid)
    selector = selectors.DefaultSelector()
    for fd in streams.names:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(pidfd, selectors.EVENT_READ)
    hangup = listener.hangup_fd() if listener is not None else None
    if hangup is not None:
        selector.register(hangup, selectors.EVENT_READ)
    if done_fd is not None and os.getpid() == 1:  # the sweep can then reach every process
        selector.register(done_fd, selectors.EVENT_READ)
    deadline = started + timeout
    exited = False
    done: Done | None = None
    try:
        while not exited and done is None and result.truncated is None and not result.abandoned:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            for key, _ in selector.select(remaining):
                if key.fd == pidfd:
                    exited = True
                elif key.fd == done_fd:
                    done, still_open = read_done(done_fd)
                    if not still_open:
                        selector.unregister(done_fd)
                elif key.fd == hangup:
                    assert listener is not None
                    if listener.hung_up():
                        result.abandoned = True
                    else:  # the peer sent something instead of leaving: stop watching
                        selector.unregister(hangup)
                elif not streams.read(key.fd):
                    selector.unregister(key.fd)
    except BaseException:
        selector.close()
        _close(process, pidfd)
        raise
    selector.close()
    finish(process, result, streams, started, pidfd, exited=exited, done=done)
    return result


def finish(process: subprocess.Popen[bytes], result: Capture, streams: Streams,
           started: float, pidfd: int, *, exited: bool, done: Done | None) -> None:
    """The end of a run (exited, reported done, or to be stopped): sweep the tree, collect
    the exit, read what is left in the pipes, close the pidfd and the pipes."""
    try:
        if done is not None and not exited:
            result.wall_time = time.monotonic() - started
            freeze_all()
            result.exit_status = done.status << 8
            result.cpu_time, result.max_rss = done.cpu, done.max_rss * 1024
            result.unreaped = process.pid
            process.returncode = done.status
        else:
            if exited:
                result.wall_time = time.monotonic() - started
                _, result.exit_status, usage = os.wait4(process.pid, 0)
                kill_tree(process.pid)
            else:
                kill_tree(process.pid)
                result.wall_time = time.monotonic() - started
                _, result.exit_status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(result.exit_status)
            result.cpu_time = usage.ru_utime + usage.ru_stime
            result.max_rss = usage.ru_maxrss * 1024
            _reap_orphans()
        # Every writer is dead (or, after a "done" report, has closed its pipes or been
        # killed): what is left in the pipes is read to its end.
        for fd in list(streams.names):
            while result.truncated is None and streams.read(fd):
                pass
        streams.flush()
    finally:
        _close(process, pidfd)


def _close(process: subprocess.Popen[bytes], pidfd: int) -> None:
    os.close(pidfd)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()


@dataclass(frozen=True)
class Done:
    """The worker's own report of its end: exit status, CPU seconds, peak RSS in KiB."""

    status: int
    cpu: float
    max_rss: int


def read_done(fd: int) -> tuple[Done | None, bool]:
    """The "done" report if what could be read ends with a valid one, and whether the
    fd is still open (at its end, or on an error, the exit is awaited instead).

    Only the last line counts: a program that wrote something else there first (it is
    the user's process) does not hide the worker's own report behind it.
    """
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None, False
    if not data:
        return None, False
    try:
        report = json.loads(data.rstrip(b"\n").rpartition(b"\n")[2])
        status, cpu, max_rss = report["done"], report["cpu"], report["max_rss"]
    except (ValueError, TypeError, KeyError):
        return None, True
    # ``type(...) is`` keeps booleans out (they are ints to ``isinstance``).
    if not (type(status) is int and type(max_rss) is int and type(cpu) in (int, float)
            and 0 <= status <= 255 and 0 <= cpu < 1e9 and 0 <= max_rss < 1 << 50):
        return None, True
    return Done(status, float(cpu), max_rss), True


def freeze_all(grace: float = 2.0) -> None:
    """As PID 1: stop every other process of the namespace and wait until each one is
    stopped or dead (a stopped process runs no code and writes nothing).

    Bounded in time: a process that cannot stop within ``grace`` (one waiting for a
    ``vfork`` child, say) is killed instead, and the wait is for the dead.
    """
    if not _settle(signal.SIGSTOP, _STOPPED_OR_DEAD, grace):
        _settle(signal.SIGKILL, _DEAD, grace)


_STOPPED_OR_DEAD = (b"T", b"t", b"Z", b"X")
_DEAD = (b"Z", b"X")


def _settle(signum: int, states: tuple[bytes, ...], grace: float) -> bool:
    """Send ``signum`` to every other process until each is in one of ``states``
    (repeated: a process may fork meanwhile); False when ``grace`` ran out."""
    deadline = time.monotonic() + grace
    pause = 0.00005  # the worker stops itself at once: short waits first
    while True:
        _signal_all_but_self(signum)
        if _all_in(states):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


def _all_in(states: tuple[bytes, ...]) -> bool:
    """Every process of this namespace but PID 1 is in one of ``states``."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return False  # cannot tell: the caller waits out its grace period
    for pid in pids:
        if pid == 1:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state not in states:
            return False
    return True


def reap_later(pid: int) -> None:
    """Before a kept sandbox's next run: kill what ``freeze_all`` stopped (the worker
    that reported its end, anything left of the program) and collect it, blocking
    until its exit is over."""
    kill_tree(pid)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    _reap_orphans()


def kill_tree(pid: int) -> None:
    """Kill the program and everything it started, daemons included."""
    if os.getpid() == 1:
        # PID 1 of the sandbox's namespace: -1 reaches every other process in it.
        _signal_all_but_self(signal.SIGKILL)
        return
    # Outside a sandbox (development only) the session is the best reach there is.
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pid, signal.SIGKILL)


def _reap_orphans(grace: float = 2.0) -> None:
    """As PID 1, collect every orphan the sweep killed; bounded in time."""
    if os.getpid() != 1:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            _signal_all_but_self(signal.SIGKILL)
            time.sleep(0.005)


def _signal_all_but_self(signum: int) -> None:
    """As PID 1: ``signum`` to every other process of the namespace."""
    with contextlib.suppress(ProcessLookupError):  # nothing else is left in the namespace
        os.kill(-1, signum)
