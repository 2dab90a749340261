"""The executor's programmatic runs: start one, go on with the client's results, cancel.

``POST /execute`` with ``tools`` starts the sandbox's one run through ``start``;
``POST /execute/continue`` and ``POST /execute/cancel`` come here too (``server.py``).
Python runs in the warm worker, which was started with its end of a tool channel
(``Runner.warm_up``) and runs the program through ``ptc_sandbox.run``; bash gets a
channel of its own and, in front of the script, one function per tool calling
``ptc_sandbox.py``. Each answer is an ``ExecuteResult``: a pause has status
``tool_call_required``, ``tool_calls`` and the output so far; the end is the result of
an ordinary run (state and the work dir's files included), with status ``error`` and
a message when the executor ended it (a bad message, too many rounds, a cancel).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading

from .protocol import ExecuteRequest, ExecuteResult, ToolResult
from .ptc import PendingCall, ProgrammaticRun, ToolChannel
from .ptc_wire import MAX_CALLS_PER_ROUND, identifier
from .runner import Runner, WarmUpError
from .state import StateExchange

__all__ = ["Programmatic"]

_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptc_sandbox.py")


def bash_prelude(names: list[str]) -> str:
    """One function per tool, in front of the user's script (identifiers only: checked)."""
    helper = f"{shlex.quote(sys.executable)} -E -s -S {shlex.quote(_HELPER)}"
    return "".join(f'{name}() {{ {helper} {name} "$@"; }}\n' for name in names)


class Programmatic:
    """The programmatic run of this sandbox, if it has one."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.run: ProgrammaticRun | None = None
        self._exchange: StateExchange | None = None
        self._done_fd: int | None = None
        self._warm_cpu = 0.0
        self._request_id = ""
        self._lock = threading.Lock()

    def start(self, request: ExecuteRequest) -> ExecuteResult:
        assert request.tools is not None
        runner, lang = self.runner, request.lang
        names = {identifier(name, lang): name for name in request.tools}
        self._request_id = request.request_id
        if runner.language.warm_interpreter:
            source = runner.write_source(request.code)["src"]
            exchange = self._exchange = StateExchange(runner.config.build_dir, request)
            message = {"path": source, "args": list(request.args), "timeout": request.timeout,
                       "tools": {"names": list(names), "max_rounds": request.max_rounds}}
            try:
                process, self._done_fd, channel, self._warm_cpu = runner.hand_over_worker(
                    exchange.stdin_payload(message))
            except WarmUpError:
                exchange.collect(ExecuteResult())  # closes its directory fd
                raise
        else:
            values = runner.write_source(bash_prelude(list(names)) + request.code)
            argv = [part.format(**values) for part in runner.language.run]
            channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                process = runner.spawn(
                    argv + list(request.args), request.timeout * (request.max_rounds + 1),
                    pass_fds=(theirs.fileno(),), env={"K8SI_TOOLS_FD": str(theirs.fileno())})
            except OSError as exc:
                channel.close()
                return ExecuteResult(request_id=request.request_id, exit_code=127,
                                     status="error", stderr=f"{argv[0]}: {exc.strerror}\n")
            finally:
                theirs.close()
        tools = ToolChannel(channel, names, request.max_rounds * MAX_CALLS_PER_ROUND)
        run = ProgrammaticRun(process, tools, cap=runner.config.max_output_bytes,
                              max_rounds=request.max_rounds, done_fd=self._done_fd)
        with run.lock:  # taken before a cancel can see the run: it ends this step instead
            self.run = run
            return self._step(run, request.timeout, None)

    def resume(self, results: dict[str, ToolResult], timeout: float) -> ExecuteResult | None:
        """The next step of the paused run; None when no run is paused here."""
        run = self.run
        if run is None or run.finished or not run.lock.acquire(blocking=False):
            return None
        try:
            if run.finished:
                return None
            return self._step(run, timeout, results)
        finally:
            run.lock.release()

    def cancel(self) -> bool:
        """Stop the run (paused or running); False when there is none to stop."""
        run = self.run
        if run is None or not run.cancel():
            return False
        with self._lock:
            if run.finished and self._exchange is not None:  # it was paused: ended here
                self._exchange.collect(ExecuteResult())  # closes its directory fd
                self._cleanup()
        return True

    def _step(self, run: ProgrammaticRun, timeout: float,
              results: dict[str, ToolResult] | None) -> ExecuteResult:
        calls = run.step(timeout, results)
        if calls is not None:
            return self._paused(run, calls)
        result = self.runner.finished(ExecuteResult(request_id=self._request_id), run.capture,
                                      warm_cpu=self._warm_cpu)
        if run.failure is not None:
            message = run.failure[:1].upper() + run.failure[1:]
            result.status, result.message = "error", message
            result.extra["ptc_failure"] = result.message
        with self._lock:
            exchange = self._exchange
            self._cleanup()
        return exchange.collect(result) if exchange is not None else result

    def _paused(self, run: ProgrammaticRun, calls: list[PendingCall]) -> ExecuteResult:
        capture = run.capture
        return ExecuteResult(
            request_id=self._request_id, status="tool_call_required",
            stdout=bytes(capture.stdout).decode("utf-8", "replace"),
            stderr=bytes(capture.stderr).decode("utf-8", "replace"),
            wall_time=round(run.wall, 6), extra={"tool_calls": [call.wire() for call in calls]})

    def _cleanup(self) -> None:
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None
        self._exchange = None
