"""Runs one program: compile, spawn under limits, capture output, enforce the timeout.

Output is read while the program runs, with a hard cap per stream, and can be
handed to an ``OutputListener`` as it arrives (the streaming ``/execute``); the
reading, the exit through a pidfd and the sweep of the whole tree afterwards live
in ``sidecar/capture.py``.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from .capture import Capture, OutputListener, capture, reap_later
from .languages import Language, java_layout
from .limits import ChildLimits, OomCounter, exit_fields
from .protocol import ExecuteRequest, ExecuteResult
from .state import StateExchange

__all__ = ["Runner", "RunnerConfig", "WarmUpError"]

_READ_CHUNK = 65536
_PYWARM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pywarm.py")


class WarmUpError(RuntimeError):
    """The warm interpreter died or hung before it was ready: the sandbox is unusable."""


@dataclass(frozen=True)
class RunnerConfig:
    """How the executor runs user code; fixed for the sandbox's lifetime."""

    workdir: str = "/mnt/data"
    build_dir: str = "/tmp/.k8si-build"
    max_output_bytes: int = 1024 * 1024
    memory_mb: int = 512
    file_size_bytes: int = 256 * 1024 * 1024
    processes: int | None = None
    address_space_bytes: int | None = None
    compile_timeout: float = 60.0
    #: Where this sandbox's memory cgroup is visible (OOM kill counter), if anywhere.
    cgroup_dir: str | None = None
    #: The user's whole environment (PATH, HOME, LANG, ...); nothing else leaks in.
    user_env: dict[str, str] = field(default_factory=dict)
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")
    mpl_seed_dir: str | None = None
    #: A calibration sandbox: record the pages the execution writes (``prefault.py``).
    calibrate: bool = False


class Runner:
    """Executes programs of one language inside this sandbox."""

    def __init__(self, config: RunnerConfig, language: Language) -> None:
        self.config = config
        self.language = language
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_status_fd: int | None = None
        #: The status pipe once the worker is ready: its "done" report comes there.
        self._worker_done_fd: int | None = None
        self._unreaped: int | None = None
        #: The executor's end of the warm worker's tool-call channel (``ptc.py``).
        self._tools_sock: socket.socket | None = None
        self._ready_lock = threading.Lock()
        self._warm_error: str | None = None
        self._worker_cpu = 0.0
        self._oom_baseline: int | None = None
        self._oom = OomCounter(config.cgroup_dir)
        self._pages_before: set[int] | None = None
        self.warm_failures: list[str] = []

    # -- warm interpreter -------------------------------------------------------

    def warm_up(self) -> None:
        """Start the language's warm interpreter (Python), if it has one."""
        if not self.language.warm_interpreter:
            return
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, True)
        self._tools_sock, tools = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(tools.fileno(), True)
        argv = ["python3", _PYWARM, str(write_fd), self.config.workdir,
                ",".join(self.config.preload), f"--tools-fd={tools.fileno()}"]
        if self.config.mpl_seed_dir:
            argv.append(self.config.mpl_seed_dir)
        if self.config.calibrate:
            argv.append("--calibrate")
        if os.getpid() == 1:  # this executor sweeps the namespace (``capture.freeze_all``)
            argv.append("--stop-after-done")
        self._worker = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.config.workdir, env=self._env(), pass_fds=(write_fd, tools.fileno()),
            preexec_fn=self._limits(timeout=self.config.compile_timeout,
                                    cpu_hard_unlimited=True).apply,
        )
        os.close(write_fd)
        tools.close()
        self._worker_status_fd = read_fd

    def wait_ready(self, timeout: float) -> bool:
        """Block until the warm interpreter has imported its libraries (or failed).

        Several requests may ask at once (a waiting ``/health?wait``, a probe): one
        reads the worker's status line, the others wait for it up to ``timeout``.
        """
        if self._warm_error is not None:
            raise WarmUpError(self._warm_error)
        if self._worker is None or self._worker_status_fd is None:
            return True
        if not self._ready_lock.acquire(timeout=timeout):
            return self._worker_status_fd is None
        try:
            return self._read_ready(timeout)
        finally:
            self._ready_lock.release()

    def _read_ready(self, timeout: float) -> bool:
        if self._worker is None or self._worker_status_fd is None:
            return True
        selector = selectors.DefaultSelector()
        selector.register(self._worker_status_fd, selectors.EVENT_READ)
        ready = bool(selector.select(timeout))
        selector.close()
        if not ready:
            return False
        line = os.read(self._worker_status_fd, 65536)
        self._worker_done_fd, self._worker_status_fd = self._worker_status_fd, None
        if not line:
            os.close(self._worker_done_fd)
            self._worker_done_fd = None
            self._worker.wait()
            assert self._worker.stderr is not None
            detail = self._worker.stderr.read()[-2000:].decode(errors="replace")
            self._warm_error = (f"the warm interpreter exited with {self._worker.returncode} "
                                f"before it was ready: {detail}")
            raise WarmUpError(self._warm_error)
        status = json.loads(line)
        self._oom_baseline = self._oom.count()
        self._worker_cpu = float(status["cpu"])
        self.warm_failures = list(status.get("failed", []))
        # Anything the imports printed is not the user's output.
        assert self._worker.stdout is not None and self._worker.stderr is not None
        for stream in (self._worker.stdout, self._worker.stderr):
            os.set_blocking(stream.fileno(), False)
            try:
                while os.read(stream.fileno(), _READ_CHUNK):
                    pass
            except BlockingIOError:
                pass
        if self.config.calibrate:
            from . import prefault

            self._pages_before = prefault.own_pages()
        return True

    def calibration(self) -> dict[str, list[list[int]]] | None:
        """In a calibration sandbox, after its execution: the pages this executor and
        the warm worker wrote while serving it (None elsewhere, or before)."""
        if self._pages_before is None:
            return None
        from . import prefault

        written = prefault.own_pages() - self._pages_before
        try:
            with open(os.path.join(self.config.build_dir, prefault.WORKER_PAGES_FILE)) as handle:
                worker = prefault.parse_ranges(json.load(handle))
        except (OSError, ValueError):
            return None  # the run did not get as far as writing it
        # A page the worker copied leaves the executor's copy its own without a write:
        # those are not the executor's to copy ahead.
        for first, count in worker:
            written.difference_update(range(first, first + count))
        return {"executor": prefault.as_ranges(written), "worker": worker}

    # -- execution ----------------------------------------------------------------

    def execute(self, request: ExecuteRequest,
                listener: OutputListener | None = None) -> ExecuteResult:
        """Compile if needed, run, and report; user-code failures are results.

        With a ``listener`` the program's output is also handed over as it arrives
        (compile diagnostics as one ``stderr`` piece), and the program is stopped
        when the listener hangs up.
        """
        values = self.write_source(request.code)
        source = values["src"]

        result = ExecuteResult(request_id=request.request_id)
        if self._oom_baseline is None:  # read at warm-up for Python: off the hot path
            self._oom_baseline = self._oom.count()
        if self.language.compile is not None:
            compiled = self._run([part.format(**values) for part in self.language.compile],
                                 self.config.compile_timeout)
            result.compile_time = round(compiled.wall_time, 6)
            if compiled.timed_out or compiled.truncated or compiled.exit_status != 0:
                failed = self._compile_failure(result, compiled)
                if listener is not None and failed.stderr:
                    listener.output("stderr", failed.stderr)
                return failed

        if self._worker is not None:
            exchange = StateExchange(self.config.build_dir, request)
            try:
                capture = self._run_warm(source, request, exchange, listener)
            except WarmUpError:
                exchange.collect(result)  # closes its directory fd
                raise
            return exchange.collect(self._result(result, capture))
        argv = [part.format(**values) for part in self.language.run]
        return self._result(result, self._run(argv + list(request.args), request.timeout,
                                              listener))

    def write_source(self, code: str) -> dict[str, str]:
        """Write the program into the build dir; the values its command lines need."""
        os.makedirs(self.config.build_dir, mode=0o700, exist_ok=True)
        source_name, main_class = self.language.source_name, "Main"
        if self.language.code == "java":
            source_name, main_class = java_layout(code)
        source = os.path.join(self.config.build_dir, source_name)
        data = code.encode("utf-8")  # one write, no text layer (the hot path of a run)
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        return {"src": source, "build": self.config.build_dir, "main": main_class,
                "memory_mb": str(self.config.memory_mb)}

    def hand_over_worker(self, message: bytes,
                         ) -> tuple[subprocess.Popen[bytes], int | None, socket.socket, float]:
        """Give the warm worker its message; the worker, its "done" fd, its tool channel
        and the CPU its warm-up used (``ptc.py`` reads it from here on)."""
        worker, tools = self._worker, self._tools_sock
        assert worker is not None and worker.stdin is not None and tools is not None
        if not self.wait_ready(timeout=self.config.compile_timeout):
            raise WarmUpError("the warm interpreter did not become ready")
        try:
            worker.stdin.write(message)
            worker.stdin.close()
        except BrokenPipeError as exc:
            raise WarmUpError("the warm interpreter died before it received the code") from exc
        done_fd, self._worker_done_fd = self._worker_done_fd, None
        self._worker, self._tools_sock = None, None
        return worker, done_fd, tools, self._worker_cpu

    def spawn(self, argv: list[str], timeout: float, pass_fds: tuple[int, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a program with the user's environment and limits (``OSError`` if it cannot)."""
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.config.workdir, env={**self._env(), **(env or {})}, pass_fds=pass_fds,
            preexec_fn=self._limits(timeout).apply)

    def finished(self, result: ExecuteResult, capture: Capture, *, warm_cpu: float = 0.0,
                 ) -> ExecuteResult:
        """The result of a program read by someone else (``ptc.py``)."""
        capture.cpu_time = max(0.0, capture.cpu_time - warm_cpu)
        self._unreaped = capture.unreaped
        return self._result(result, capture)

    def _run_warm(self, source: str, request: ExecuteRequest, exchange: StateExchange,
                  listener: OutputListener | None) -> Capture:
        worker = self._worker
        assert worker is not None and worker.stdin is not None
        if not self.wait_ready(timeout=self.config.compile_timeout):
            raise WarmUpError("the warm interpreter did not become ready")
        message = {"path": source, "args": list(request.args), "timeout": request.timeout}
        if self._tools_sock is not None:  # an ordinary run: no tool channel
            self._tools_sock.close()
            self._tools_sock = None
        started = time.monotonic()
        try:
            # A JSON line, then the state blob to restore: read whole before the code runs.
            worker.stdin.write(exchange.stdin_payload(message))
            worker.stdin.close()
        except BrokenPipeError as exc:
            raise WarmUpError("the warm interpreter died before it received the code") from exc
        try:
            capture = self._capture(worker, request.timeout, started, listener,
                                    done_fd=self._worker_done_fd)
        finally:
            if self._worker_done_fd is not None:
                os.close(self._worker_done_fd)
                self._worker_done_fd = None
        capture.cpu_time = max(0.0, capture.cpu_time - self._worker_cpu)
        self._worker = None
        self._unreaped = capture.unreaped
        return capture

    def rearm(self) -> None:
        """A kept sandbox (``kept.py``) after a run: ready for the next one (the warm
        interpreter started again; the OOM counter read afresh)."""
        if self._tools_sock is not None:
            self._tools_sock.close()
            self._tools_sock = None
        self._oom_baseline = None
        if self._worker is not None:  # not used by the last run (it failed before)
            return
        if self._worker_done_fd is not None:
            os.close(self._worker_done_fd)
            self._worker_done_fd = None
        self.warm_up()

    def reap(self) -> None:
        """Kill and collect a worker that reported its end and was stopped (a kept
        sandbox, before its next run; a single-use sandbox leaves it to its destruction)."""
        if self._unreaped is not None:
            reap_later(self._unreaped)
            self._unreaped = None

    def _run(self, argv: list[str], timeout: float,
             listener: OutputListener | None = None) -> Capture:
        started = time.monotonic()
        try:
            process = self.spawn(argv, timeout)
        except OSError as exc:
            message = f"{argv[0]}: {exc.strerror}\n"
            if listener is not None:
                listener.output("stderr", message)
            return Capture(exit_status=127 << 8, stderr=bytearray(message.encode()))
        return self._capture(process, timeout, started, listener)

    def _capture(self, process: subprocess.Popen[bytes], timeout: float, started: float,
                 listener: OutputListener | None, done_fd: int | None = None) -> Capture:
        return capture(process, timeout, started, self.config.max_output_bytes, listener,
                       done_fd=done_fd)

    # -- results ------------------------------------------------------------------

    def _compile_failure(self, result: ExecuteResult, compiled: Capture) -> ExecuteResult:
        result.status = "timeout" if compiled.timed_out else "error"
        result.message = ("Compilation time limit exceeded" if compiled.timed_out
                          else "Compilation failed")
        result.exit_code, result.signal = exit_fields(compiled.exit_status)
        # Compilers such as tsc report on stdout: all of it is diagnostics.
        diagnostics = bytes(compiled.stdout) + bytes(compiled.stderr)
        result.stderr = diagnostics.decode("utf-8", "replace")
        result.stderr_truncated = compiled.truncated is not None
        result.wall_time = round(compiled.wall_time, 6)
        result.cpu_time = round(compiled.cpu_time, 6)
        result.max_rss = compiled.max_rss
        return result

    def _result(self, result: ExecuteResult, capture: Capture) -> ExecuteResult:
        result.exit_code, result.signal = exit_fields(capture.exit_status)
        result.stdout = capture.stdout.decode("utf-8", "replace")
        result.stderr = capture.stderr.decode("utf-8", "replace")
        result.stdout_truncated = capture.truncated == "stdout"
        result.stderr_truncated = capture.truncated == "stderr"
        result.wall_time = round(capture.wall_time, 6)
        result.cpu_time = round(capture.cpu_time, 6)
        result.max_rss = capture.max_rss
        if capture.abandoned:
            result.status, result.message = "error", "The client went away: the program was stopped"
        elif capture.timed_out:
            result.status, result.message = "timeout", "Time limit exceeded"
        elif capture.truncated:
            result.status, result.message = "output_limit", f"{capture.truncated} length exceeded"
        elif self._out_of_memory(result):
            result.status, result.message = "oom", "Out of memory"
        elif result.signal == "SIGXCPU":
            result.status, result.message = "timeout", "CPU time limit exceeded"
        elif result.exit_code == 0:
            result.status = "ok"
        else:
            result.status = "error"
            if result.signal:
                result.message = f"Killed by signal {result.signal}"
        return result

    def _out_of_memory(self, result: ExecuteResult) -> bool:
        kills = self._oom.count()
        if kills is not None:
            return kills > (self._oom_baseline or 0)
        if self.config.address_space_bytes is None or result.exit_code == 0:
            return False
        tail = result.stderr[-2000:]
        return any(marker in tail for marker in
                   ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory"))

    # -- environment and limits ---------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**self.config.user_env, **self.language.env}

    def _limits(self, timeout: float, *, cpu_hard_unlimited: bool = False) -> ChildLimits:
        return ChildLimits(
            cpu_seconds=int(timeout) + 1,
            file_size_bytes=self.config.file_size_bytes,
            processes=self.config.processes,
            address_space_bytes=self.config.address_space_bytes,
            cpu_hard_unlimited=cpu_hard_unlimited,
        )
