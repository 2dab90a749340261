"""Programmatic tool calling inside the sandbox: the program's side of the channel.

This runs in the user's own process, never in the executor, and holds nothing the
user's code could not hold itself: one end of the tool-call channel (see
``sidecar/ptc_wire.py``). Whatever it sends, the executor checks.

Python (``run``, called by ``pywarm.py``): every tool becomes an ``async`` function
in the program's namespace, taking keyword arguments. The program is compiled with
top-level ``await`` allowed, so its variables stay module globals (kept as session
state like any ``/exec`` run) and it runs on an event loop whose selector tells the
executor when the loop has nothing left to do but wait for replies (``wait``): the
calls sent by then, several at once with ``asyncio.gather``, are one round. A reply
with ``ok: false`` raises ``ToolError`` where the call was awaited.

Bash (``python3 ptc_sandbox.py IDENTIFIER [JSON]``, run by the tool functions the
executor defines in front of the script): one call, the reply's result on stdout
(text as is, anything else as compact JSON), an error on stderr with exit status 1.

An input the executor would refuse (larger than ``MAX_CALL_BYTES``, an integer outside
the signed 64-bit range) is never sent: the call raises ``ValueError`` (bash: the
message on stderr, exit status 1), which the program can catch.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import selectors
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:
    from .ptc_wire import MAX_CALL_BYTES, wire_int
else:  # run as a script from the sidecar directory (bash), or imported by pywarm
    from ptc_wire import MAX_CALL_BYTES, wire_int

__all__ = ["ToolError", "run"]

_PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000


class ToolError(Exception):
    """The client reported this tool call as failed (``is_error``)."""


ToolError.__module__ = "builtins"  # tracebacks say ``ToolError: ...``, as for a builtin


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot encode by itself: numpy scalars and arrays, sets, the rest as text."""
    for method in ("tolist", "item"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _decoded(result: Any) -> Any:
    """A result as a Python value: text that holds a JSON object or array is decoded."""
    if isinstance(result, str) and result.strip()[:1] in ("{", "["):
        try:
            return json.loads(result)
        except ValueError:
            return result
    return result


def _send_call(channel: socket.socket, name: str, payload: Any) -> socket.socket:
    """Send one call with a fresh reply socket attached; our end of it."""
    data = json.dumps({"op": "call", "name": name, "input": payload}, default=_jsonable,
                      separators=(",", ":")).encode()
    if len(data) > MAX_CALL_BYTES:
        raise ValueError(f"the input of {name}() is larger than {MAX_CALL_BYTES} bytes")
    try:
        json.loads(data, parse_int=wire_int)  # what the executor would refuse
    except ValueError as exc:
        raise ValueError(f"the input of {name}() has {exc}") from None
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", [theirs.fileno()]))])
    except OSError as exc:
        mine.close()
        raise ToolError(f"{name}: the tool channel is closed ({exc.strerror})") from None
    finally:
        theirs.close()
    return mine


def _reply(name: str, raw: bytes) -> Any:
    try:
        reply = json.loads(raw) if raw else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ToolError(f"{name}: no result came back")
    if reply.get("ok") is True:
        return _decoded(reply.get("result"))
    raise ToolError(str(reply.get("error") or f"{name} failed"))


class _Bridge:
    """The program's end of the channel, and whether a round is still unannounced."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.unannounced = False

    def idle(self) -> None:
        """The event loop is about to wait: the calls sent since the last round form one."""
        if self.unannounced:
            self.unannounced = False
            # If the executor went away, the calls' replies will say so.
            with contextlib.suppress(OSError):
                self.channel.send(b'{"op":"wait"}')

    async def call(self, name: str, payload: Any) -> Any:
        reply_socket = _send_call(self.channel, name, payload)
        self.unannounced = True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        chunks: list[bytes] = []
        fd = reply_socket.fileno()
        reply_socket.setblocking(False)

        def readable() -> None:
            try:
                chunk = reply_socket.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                chunks.append(chunk)
            elif not future.done():
                future.set_result(b"".join(chunks))

        loop.add_reader(fd, readable)
        try:
            raw = await future
        finally:
            loop.remove_reader(fd)
            reply_socket.close()
        return _reply(name, raw)


class _IdleSelector(selectors.DefaultSelector):
    """The loop's selector: before the loop blocks, the bridge announces the round."""

    bridge: _Bridge | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        if self.bridge is not None and (timeout is None or timeout > 0):
            self.bridge.idle()
        return super().select(timeout)


def _stub(bridge: _Bridge, name: str) -> Any:
    async def tool(*args: Any, **kwargs: Any) -> Any:
        if args:
            if len(args) != 1 or kwargs or not isinstance(args[0], dict):
                raise TypeError(f"{name}() takes keyword arguments only")
            kwargs = args[0]
        return await bridge.call(name, kwargs)

    tool.__name__ = tool.__qualname__ = name
    return tool


def run(path: str, namespace: dict[str, Any], channel_fd: int, names: list[str]) -> None:
    """Run the program at ``path`` in ``namespace`` with the tools ``names`` (identifiers).

    Raises what the program raises, as ``exec`` would. The tool functions leave the
    namespace afterwards (they are not session state).
    """
    channel = socket.socket(fileno=channel_fd)
    bridge = _Bridge(channel)
    stubs = {name: _stub(bridge, name) for name in names}
    namespace.setdefault("asyncio", asyncio)
    namespace.update(stubs)
    namespace.setdefault("ToolError", ToolError)
    try:
        with open(path, "rb") as handle:
            code = compile(handle.read(), path, "exec", flags=_PYCF_ALLOW_TOP_LEVEL_AWAIT,
                           dont_inherit=True)
        outcome = eval(code, namespace)  # noqa: S307 - the user's program, in its sandbox
        if asyncio.iscoroutine(outcome):
            selector = _IdleSelector()
            selector.bridge = bridge
            loop = asyncio.SelectorEventLoop(selector)
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(outcome)
            finally:
                selector.bridge = None
                loop.run_until_complete(loop.shutdown_asyncgens())
                asyncio.set_event_loop(None)
                loop.close()
    finally:
        for name, stub in stubs.items():
            if namespace.get(name) is stub:
                del namespace[name]
        if namespace.get("ToolError") is ToolError:
            del namespace["ToolError"]
        channel.close()


def main(argv: list[str]) -> int:
    """One call from a bash tool function: ``IDENTIFIER [JSON]``."""
    if not argv:
        print("usage: ptc_sandbox.py IDENTIFIER [JSON]", file=sys.stderr)
        return 2
    name, raw = argv[0], (argv[1] if len(argv) > 1 else "")
    try:
        payload: Any = json.loads(raw) if raw.strip() else {}
    except ValueError:
        payload = raw  # not JSON: the text itself is the input
    try:
        channel = socket.socket(fileno=int(os.environ.get("K8SI_TOOLS_FD", "")))
    except (ValueError, OSError):
        print(f"{name}: tools are only available in programmatic runs", file=sys.stderr)
        return 1
    try:
        with _send_call(channel, name, payload) as reply_socket:
            chunks = []
            while chunk := reply_socket.recv(1 << 20):
                chunks.append(chunk)
        result = _reply(name, b"".join(chunks))
    except (ToolError, ValueError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        channel.detach()  # the shell's fd: shared by every call, never closed here
    text = result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
