"""Programmatic tool calling, the executor's side: a run that pauses between rounds.

The program (Python in the warm worker, or bash) reaches its tools through a
``SOCK_SEQPACKET`` channel (``sidecar/ptc_wire.py``). ``ToolChannel`` reads it and
trusts nothing: every message is size-capped (a truncated message or extra fds end
the run), must be a JSON object of a known shape naming a declared tool, with only
numbers the API can read (integers of the signed 64-bit range, finite doubles), carries
exactly one fd that must be a socket (received close-on-exec). A round holds at most
``MAX_CALLS_PER_ROUND`` calls: once it is full, no more are read, and the calls the
program made beyond it (a wide ``asyncio.gather``) are read after the pause, as the
next round. Call ids are made here, never by the program.

``ProgrammaticRun`` reads the program the way ``capture.capture`` does (caps per
stream, the exit through a pidfd, a worker's "done" report) and also watches the
channel. A round ends when the program says it waits (Python's idle event loop), when
no call came for ``SETTLE`` seconds (bash, whose parallel calls come from background
jobs), or when it is full; ``step`` then returns the round's calls and leaves the program
running, its clock stopped. The next ``step`` writes the replies and goes on, with a
fresh timeout. A reply not yet fully written when a round is returned (a large
result the program is still reading while another of its tasks makes the round's
call) is kept across the pause, and the next step writes the rest: a result given
is only ever lost with the run. The end (exit, timeout, output cap, a bad message,
too many rounds, ``cancel``) goes through ``capture.finish``: the whole tree is
swept as usual.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import os
import secrets
import selectors
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .capture import Capture, Done, Streams, finish, kill_tree, read_done
from .protocol import ToolResult
from .ptc_wire import MAX_CALL_BYTES, MAX_CALLS_PER_ROUND, wire_int

__all__ = ["MAX_DEPTH", "SETTLE", "ChannelViolation", "PendingCall", "ProgrammaticRun",
           "ToolChannel", "signal_tree"]

#: Seconds without a new call after which the calls so far form a round.
SETTLE = 0.25
_MAX_FDS = 4  # ancillary room: more than one fd in a message is refused, not truncated
#: The deepest nesting a tool call's input may have.
MAX_DEPTH = 64
#: Messages one ``receive`` reads before the step loop looks at its clock again.
_MESSAGES_PER_RECEIVE = 64
#: ``wait`` messages one round may carry (the program sends one per call at most).
_MAX_WAITS = 4 * MAX_CALLS_PER_ROUND


class ChannelViolation(Exception):
    """The program sent something outside the channel's protocol: the run ends."""


@dataclass
class PendingCall:
    """One call the program made, waiting for the client's result."""

    id: str
    name: str
    input: Any
    reply: socket.socket = field(repr=False)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "input": self.input}


def _reject_constant(name: str) -> Any:
    raise ChannelViolation(f"a message with {name} (not JSON)")


def _parse_int(literal: str) -> int:
    """An integer the API can read (signed 64-bit): a larger one is a malformed call."""
    try:
        return wire_int(literal)
    except ValueError as exc:
        raise ChannelViolation(f"a message with {exc}") from None


def _parse_float(literal: str) -> float:
    """A number that stays finite: ``1e400`` would reach the API as ``Infinity``."""
    value = float(literal)
    if not math.isfinite(value):
        raise ChannelViolation("a message with a number out of range (not a finite double)")
    return value


def _check_value(value: Any) -> None:
    """``ChannelViolation`` unless ``value`` nests at most ``MAX_DEPTH`` deep and its
    strings are valid Unicode (no lone surrogates); iterative, bounded by the message."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ChannelViolation("a message with an invalid string (a lone "
                                       "surrogate)") from None
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ChannelViolation(f"a message nested more than {MAX_DEPTH} deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _encode_reply(payload: dict[str, Any]) -> bytes:
    """The reply as strict JSON; an error reply when the result cannot be encoded."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError):
        return b'{"ok":false,"error":"the tool result could not be encoded as JSON"}'


class _Reply:
    """A reply being written to a call's reply socket. Every send is ``MSG_DONTWAIT``:
    the socket's O_NONBLOCK flag lives on a file description the program shares."""

    def __init__(self, sock: socket.socket, payload: dict[str, Any]) -> None:
        self.sock = sock
        self.data = memoryview(_encode_reply(payload))

    def write(self) -> bool:
        """Write what the socket takes; True once the reply is out (or cannot be). The
        caller closes the socket (after unregistering it)."""
        try:
            self.data = self.data[self.sock.send(self.data, socket.MSG_DONTWAIT):]
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.data = self.data[:0]  # the program closed its end: nobody to tell
        return not self.data


class ToolChannel:
    """The executor's end of the channel, and the calls of the current round."""

    def __init__(self, sock: socket.socket, names: dict[str, str], max_calls: int) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.names = names  # identifier -> the tool's name
        self.max_calls = max_calls
        self.pending: list[PendingCall] = []
        self.awaiting: dict[str, PendingCall] = {}
        self.calls = 0
        self.waiting = False
        self.waits = 0
        self.last_call = 0.0
        self.eof = False

    def receive(self) -> None:
        """Read the messages waiting (at most ``_MESSAGES_PER_RECEIVE``: the step loop
        comes back for the rest); ``ChannelViolation`` for anything malformed."""
        for _ in range(_MESSAGES_PER_RECEIVE):
            if self.eof or self.full:
                return  # a full round: the rest is read after its pause
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    MAX_CALL_BYTES + 1, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            fds = _fds(ancillary)
            try:
                if not data and not fds:
                    self.eof = True  # every end in the sandbox was closed
                    return
                if len(data) > MAX_CALL_BYTES or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ChannelViolation(f"a message over {MAX_CALL_BYTES} bytes or with "
                                           "too many fds")
                self._accept(data, fds)
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise

    def _accept(self, data: bytes, fds: list[int]) -> None:
        try:
            message = json.loads(data, parse_constant=_reject_constant, parse_int=_parse_int,
                                 parse_float=_parse_float)
        except (ValueError, RecursionError) as exc:
            raise ChannelViolation("a message that is not JSON (or nested too deep)") from exc
        _check_value(message)
        op = message.get("op") if isinstance(message, dict) else None
        if op == "wait" and not fds:
            self.waits += 1
            if self.waits > _MAX_WAITS:
                raise ChannelViolation(f"more than {_MAX_WAITS} wait messages in one round")
            self.waiting = True
            return
        if op != "call" or set(message) != {"op", "name", "input"} or len(fds) != 1:
            raise ChannelViolation("a message of unknown shape")
        name = self.names.get(message["name"]) if isinstance(message["name"], str) else None
        if name is None:
            raise ChannelViolation(f"a call of an undeclared tool {str(message['name'])[:100]!r}")
        if not stat.S_ISSOCK(os.fstat(fds[0]).st_mode):
            raise ChannelViolation("a call whose reply fd is not a socket")
        if self.calls >= self.max_calls:
            raise ChannelViolation(f"more than {self.max_calls} tool calls in one run")
        self.calls += 1
        self.last_call = time.monotonic()
        reply = socket.socket(fileno=fds[0])
        self.pending.append(PendingCall(f"call_{secrets.token_urlsafe(12)}", name,
                                        message["input"], reply))

    @property
    def full(self) -> bool:
        """The round holds ``MAX_CALLS_PER_ROUND`` calls: it goes out as it is."""
        return len(self.pending) >= MAX_CALLS_PER_ROUND

    def take_round(self) -> list[PendingCall]:
        calls, self.pending, self.waiting, self.waits = self.pending, [], False, 0
        self.awaiting.update((call.id, call) for call in calls)
        return calls

    def answer(self, results: dict[str, ToolResult]) -> list[_Reply]:
        """The replies to the calls of the last round (a call left unanswered fails)."""
        replies = []
        for call_id, call in self.awaiting.items():
            given = results.get(call_id)
            payload: dict[str, Any] = (
                {"ok": False, "error": "no result was given for this call"} if given is None
                else {"ok": True, "result": given.result} if given.ok
                else {"ok": False, "error": given.error or "the tool failed"})
            replies.append(_Reply(call.reply, payload))
        self.awaiting.clear()
        return replies

    def close(self) -> None:
        for call in [*self.pending, *self.awaiting.values()]:
            call.reply.close()
        self.pending, self.awaiting = [], {}
        self.sock.close()


def _fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to the program and everything it started (as ``kill_tree`` reaches
    them: every other process of the sandbox as its PID 1, else the program's group)."""
    with contextlib.suppress(ProcessLookupError):  # nothing left to signal
        if os.getpid() == 1:
            os.kill(-1, sig)
        else:
            os.killpg(pid, sig)


class ProgrammaticRun:
    """One program under programmatic tool calling, across its rounds."""

    def __init__(self, process: subprocess.Popen[bytes], channel: ToolChannel, *,
                 cap: int, max_rounds: int, done_fd: int | None = None) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        self.channel = channel
        self.capture = Capture()
        self.streams = Streams(process, self.capture, cap, None)
        self.open_fds = set(self.streams.names)
        for fd in self.open_fds:
            os.set_blocking(fd, False)
        self.pidfd = os.pidfd_open(process.pid)
        self.done_fd = done_fd
        self.max_rounds = max_rounds
        self.rounds = 0
        self.wall = 0.0
        self.finished = False
        #: Why the run was ended by the executor (None: it ended by itself).
        self.failure: str | None = None
        self.lock = threading.Lock()
        self._replies: list[_Reply] = []
        self._cancelled = False
        #: The program's tree is stopped (SIGSTOP) while the run is paused.
        self.frozen = False

    def step(self, timeout: float, results: dict[str, ToolResult] | None = None,
             ) -> list[PendingCall] | None:
        """Run until the next round of calls (returned) or the end (None: ``capture`` and
        ``failure`` are final). Hold ``lock`` around it."""
        self._freeze(False)
        if results is not None:
            self._replies += self.channel.answer(results)
        started = time.monotonic()
        selector = selectors.DefaultSelector()
        for fd in self.open_fds:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(self.pidfd, selectors.EVENT_READ)
        if self.done_fd is not None and os.getpid() == 1:
            selector.register(self.done_fd, selectors.EVENT_READ)
        if not self.channel.eof:
            selector.register(self.channel.sock, selectors.EVENT_READ)
        for reply in self._replies:
            selector.register(reply.sock, selectors.EVENT_WRITE, reply)
        exited, done = False, None
        try:
            exited, done, calls = self._loop(selector, started + timeout)
        finally:
            selector.close()
            self.wall += time.monotonic() - started
        if calls is not None:
            # Replies still being written stay: the next step finishes them (a result
            # the client gave is never lost to a round that began meanwhile).
            self._freeze(True)
            return calls
        if self._cancelled:
            self.failure = "cancelled"
        self._end(exited=exited, done=done)
        return None

    def _loop(self, selector: selectors.BaseSelector, deadline: float,
              ) -> tuple[bool, Done | None, list[PendingCall] | None]:
        channel = self.channel
        while self.capture.truncated is None and not self._cancelled:
            now = time.monotonic()
            if channel.pending and (channel.waiting or channel.full
                                    or now - channel.last_call >= SETTLE):
                if self.rounds >= self.max_rounds:
                    self.failure = f"more than {self.max_rounds} rounds of tool calls"
                    break
                self.rounds += 1
                return False, None, channel.take_round()
            remaining = deadline - now
            if remaining <= 0:
                self.capture.timed_out = True
                break
            if channel.pending:
                remaining = min(remaining, max(0.0, channel.last_call + SETTLE - now))
            for key, _ in selector.select(remaining):
                if key.fd == self.pidfd:
                    return True, None, None
                if key.fd == self.done_fd:
                    done, still_open = read_done(key.fd)
                    if not still_open:
                        selector.unregister(key.fd)
                    if done is not None:
                        return False, done, None
                elif key.data is not None:
                    if key.data.write():
                        selector.unregister(key.fd)
                        key.data.sock.close()
                        self._replies.remove(key.data)
                elif key.fd == channel.sock.fileno():
                    try:
                        channel.receive()
                    except ChannelViolation as exc:
                        self.failure = f"invalid tool call from the program: {exc}"
                        return False, None, None
                    if channel.eof:
                        selector.unregister(key.fd)
                elif not self.streams.read(key.fd):
                    selector.unregister(key.fd)
                    self.open_fds.discard(key.fd)
            if channel.waiting and not channel.pending:
                channel.waiting = False  # idle without calls (a sleep): not a round
        return False, None, None

    def _freeze(self, frozen: bool) -> None:
        """Stop (or continue) the program's whole tree while the run is paused: a paused
        program uses no CPU and makes no progress between rounds."""
        if frozen == self.frozen:
            return
        self.frozen = frozen
        signal_tree(self.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def _end(self, *, exited: bool, done: Done | None) -> None:
        for reply in self._replies:
            reply.sock.close()
        self._replies = []
        self.channel.close()
        # ``finish`` measures from ``started``: the steps' time only, never the pauses.
        finish(self.process, self.capture, self.streams, time.monotonic() - self.wall,
               self.pidfd, exited=exited, done=done)
        self.finished = True

    def cancel(self) -> bool:
        """Stop the program. A paused run ends here; a running step ends by itself.
        False when the run was already over."""
        if self.finished:
            return False
        self._cancelled = True
        kill_tree(self.process.pid)
        if self.lock.acquire(blocking=False):
            try:
                if not self.finished:
                    self.failure = "cancelled"
                    self._end(exited=False, done=None)
            finally:
                self.lock.release()
        return True
