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
the worker has closed its stdout and stderr and is exiting, its status and usage
in the report. As PID 1, the executor then sweeps the rest, waits until no other
process is alive, reads the pipes to their end, and answers without waiting for
the kernel to tear the worker down; ``reap_later`` collects it afterwards.
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

__all__ = ["Capture", "Done", "OutputListener", "Streams", "capture", "finish", "kill_tree",
           "read_done", "reap_later"]

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
    #: The program reported its end and is still exiting: ``reap_later`` collects it.
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
                    selector.unregister(done_fd)
                    done = read_done(done_fd)
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
            kill_tree(process.pid)
            _await_the_rest(process.pid)
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


def read_done(fd: int) -> Done | None:
    """The "done" line, or None when it is missing or malformed (the exit is awaited)."""
    try:
        report = json.loads(os.read(fd, 4096))
        status, cpu, max_rss = report["done"], report["cpu"], report["max_rss"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    # ``type(...) is`` keeps booleans out (they are ints to ``isinstance``).
    if not (type(status) is int and type(max_rss) is int and type(cpu) in (int, float)
            and 0 <= status <= 255 and 0 <= cpu < 1e9 and 0 <= max_rss < 1 << 50):
        return None
    return Done(status, float(cpu), max_rss)


def _await_the_rest(worker: int, grace: float = 2.0) -> None:
    """As PID 1 after the sweep: wait until every process but the exiting worker is dead.

    Dead means a zombie or gone (a zombie has closed its files), so the pipes end and
    nothing writes to the work dir any more. Bounded in time; the sweep is repeated.
    """
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # no child left to collect
            while os.waitpid(-1, os.WNOHANG)[0] not in (0, worker):
                pass
        if not _alive_besides(worker):
            return
        _kill_all_but_self()
        time.sleep(0.0005)


def _alive_besides(worker: int) -> bool:
    """A process of this namespace other than PID 1 and ``worker`` is not yet dead."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # cannot tell: the caller waits out its grace period
    for pid in pids:
        if pid in (1, worker):
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state not in (b"Z", b"X"):
            return True
    return False


def reap_later(pid: int) -> None:
    """Collect a worker that reported its end (blocking until its exit is over)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    _reap_orphans()


def kill_tree(pid: int) -> None:
    """Kill the program and everything it started, daemons included."""
    if os.getpid() == 1:
        # PID 1 of the sandbox's namespace: -1 reaches every other process in it.
        _kill_all_but_self()
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
            _kill_all_but_self()
            time.sleep(0.005)


def _kill_all_but_self() -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing else is left in the namespace
        os.kill(-1, signal.SIGKILL)
