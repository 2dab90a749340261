"""Runs one program: compile, spawn under limits, capture output, enforce the timeout.

Output is read while the program runs, with a hard cap per stream. The program's
exit is watched through a pidfd. When it ends, times out or floods, the **whole**
tree is killed: as PID 1 of its namespace the executor sweeps with
``kill(-1, SIGKILL)`` (a ``setsid`` double-forked daemon dies too), then reaps.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .languages import Language, java_layout
from .limits import ChildLimits
from .protocol import ExecuteRequest, ExecuteResult

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


@dataclass
class _Capture:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    truncated: str | None = None  # "stdout" or "stderr": the stream that hit the cap
    timed_out: bool = False
    exit_status: int = 0
    cpu_time: float = 0.0
    max_rss: int = 0
    wall_time: float = 0.0


class Runner:
    """Executes programs of one language inside this sandbox."""

    def __init__(self, config: RunnerConfig, language: Language) -> None:
        self.config = config
        self.language = language
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_status_fd: int | None = None
        self._worker_cpu = 0.0
        self._oom_baseline: int | None = None
        self.warm_failures: list[str] = []

    # -- warm interpreter -------------------------------------------------------

    def warm_up(self) -> None:
        """Start the language's warm interpreter (Python), if it has one."""
        if not self.language.warm_interpreter:
            return
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, True)
        argv = ["python3", _PYWARM, str(write_fd), self.config.workdir,
                ",".join(self.config.preload)]
        if self.config.mpl_seed_dir:
            argv.append(self.config.mpl_seed_dir)
        self._worker = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.config.workdir, env=self._env(), pass_fds=(write_fd,),
            preexec_fn=self._limits(timeout=self.config.compile_timeout).apply,
        )
        os.close(write_fd)
        self._worker_status_fd = read_fd

    def wait_ready(self, timeout: float) -> bool:
        """Block until the warm interpreter has imported its libraries (or failed)."""
        if self._worker is None or self._worker_status_fd is None:
            return True
        selector = selectors.DefaultSelector()
        selector.register(self._worker_status_fd, selectors.EVENT_READ)
        ready = bool(selector.select(timeout))
        selector.close()
        if not ready:
            return False
        line = os.read(self._worker_status_fd, 65536)
        os.close(self._worker_status_fd)
        self._worker_status_fd = None
        if not line:
            self._worker.wait()
            assert self._worker.stderr is not None
            detail = self._worker.stderr.read()[-2000:].decode(errors="replace")
            raise WarmUpError(f"the warm interpreter exited with {self._worker.returncode} "
                              f"before it was ready: {detail}")
        status = json.loads(line)
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
        return True

    # -- execution ----------------------------------------------------------------

    def execute(self, request: ExecuteRequest) -> ExecuteResult:
        """Compile if needed, run, and report; user-code failures are results."""
        os.makedirs(self.config.build_dir, mode=0o700, exist_ok=True)
        source_name, main_class = self.language.source_name, "Main"
        if self.language.code == "java":
            source_name, main_class = java_layout(request.code)
        source = os.path.join(self.config.build_dir, source_name)
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(request.code)
        values = {"src": source, "build": self.config.build_dir, "main": main_class,
                  "memory_mb": str(self.config.memory_mb)}

        result = ExecuteResult(request_id=request.request_id)
        self._oom_baseline = oom_kill_count(self.config.cgroup_dir)
        if self.language.compile is not None:
            compiled = self._run([part.format(**values) for part in self.language.compile],
                                 self.config.compile_timeout)
            result.compile_time = round(compiled.wall_time, 6)
            if compiled.timed_out or compiled.truncated or compiled.exit_status != 0:
                return self._compile_failure(result, compiled)

        if self._worker is not None:
            capture = self._run_warm(source, request)
        else:
            argv = [part.format(**values) for part in self.language.run]
            capture = self._run(argv + list(request.args), request.timeout)
        return self._result(result, capture)

    def _run_warm(self, source: str, request: ExecuteRequest) -> _Capture:
        worker = self._worker
        assert worker is not None and worker.stdin is not None
        if not self.wait_ready(timeout=self.config.compile_timeout):
            raise WarmUpError("the warm interpreter did not become ready")
        message = {"path": source, "args": list(request.args), "timeout": request.timeout}
        started = time.monotonic()
        try:
            worker.stdin.write(json.dumps(message).encode())
            worker.stdin.close()
        except BrokenPipeError as exc:
            raise WarmUpError("the warm interpreter died before it received the code") from exc
        capture = self._capture(worker, request.timeout, started)
        capture.cpu_time = max(0.0, capture.cpu_time - self._worker_cpu)
        self._worker = None
        return capture

    def _run(self, argv: list[str], timeout: float) -> _Capture:
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.config.workdir, env=self._env(),
                preexec_fn=self._limits(timeout).apply,
            )
        except OSError as exc:
            capture = _Capture(exit_status=127 << 8)
            capture.stderr += f"{argv[0]}: {exc.strerror}\n".encode()
            return capture
        return self._capture(process, timeout, started)

    def _capture(self, process: subprocess.Popen[bytes], timeout: float,
                 started: float) -> _Capture:
        """Read both streams until the program exits, floods, or runs out of time."""
        assert process.stdout is not None and process.stderr is not None
        capture = _Capture()
        cap = self.config.max_output_bytes
        streams = {process.stdout.fileno(): ("stdout", capture.stdout),
                   process.stderr.fileno(): ("stderr", capture.stderr)}
        pidfd = os.pidfd_open(process.pid)
        selector = selectors.DefaultSelector()
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        selector.register(pidfd, selectors.EVENT_READ)
        deadline = started + timeout
        exited = False
        try:
            while not exited and capture.truncated is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    capture.timed_out = True
                    break
                for key, _ in selector.select(remaining):
                    if key.fd == pidfd:
                        exited = True
                    elif not self._read_into(key.fd, streams, capture, cap):
                        selector.unregister(key.fd)
            if exited:
                capture.wall_time = time.monotonic() - started
                _, capture.exit_status, usage = os.wait4(process.pid, 0)
                _kill_tree(process.pid)
            else:
                _kill_tree(process.pid)
                capture.wall_time = time.monotonic() - started
                _, capture.exit_status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(capture.exit_status)
            capture.cpu_time = usage.ru_utime + usage.ru_stime
            capture.max_rss = usage.ru_maxrss * 1024
            _reap_orphans()
            # Every writer is dead now: what is left in the pipes ends at EOF.
            for fd in list(streams):
                while capture.truncated is None and self._read_into(fd, streams, capture, cap):
                    pass
        finally:
            selector.close()
            os.close(pidfd)
            process.stdout.close()
            process.stderr.close()
        return capture

    @staticmethod
    def _read_into(fd: int, streams: dict[int, tuple[str, bytearray]], capture: _Capture,
                   cap: int) -> bool:
        """Read one chunk; False at EOF. Marks the capture when a stream passes its cap."""
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return False
        name, buffer = streams[fd]
        room = cap - len(buffer)
        buffer += chunk[:room]
        if len(chunk) > room:
            capture.truncated = name
        return True

    # -- results ------------------------------------------------------------------

    def _compile_failure(self, result: ExecuteResult, compiled: _Capture) -> ExecuteResult:
        result.status = "timeout" if compiled.timed_out else "error"
        result.message = ("Compilation time limit exceeded" if compiled.timed_out
                          else "Compilation failed")
        result.exit_code, result.signal = _exit_fields(compiled.exit_status)
        # Compilers such as tsc report on stdout: all of it is diagnostics.
        diagnostics = bytes(compiled.stdout) + bytes(compiled.stderr)
        result.stderr = diagnostics.decode("utf-8", "replace")
        result.stderr_truncated = compiled.truncated is not None
        result.wall_time = round(compiled.wall_time, 6)
        result.cpu_time = round(compiled.cpu_time, 6)
        result.max_rss = compiled.max_rss
        return result

    def _result(self, result: ExecuteResult, capture: _Capture) -> ExecuteResult:
        result.exit_code, result.signal = _exit_fields(capture.exit_status)
        result.stdout = capture.stdout.decode("utf-8", "replace")
        result.stderr = capture.stderr.decode("utf-8", "replace")
        result.stdout_truncated = capture.truncated == "stdout"
        result.stderr_truncated = capture.truncated == "stderr"
        result.wall_time = round(capture.wall_time, 6)
        result.cpu_time = round(capture.cpu_time, 6)
        result.max_rss = capture.max_rss
        if capture.timed_out:
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
        kills = oom_kill_count(self.config.cgroup_dir)
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

    def _limits(self, timeout: float) -> ChildLimits:
        return ChildLimits(
            cpu_seconds=int(timeout) + 1,
            file_size_bytes=self.config.file_size_bytes,
            processes=self.config.processes,
            address_space_bytes=self.config.address_space_bytes,
        )


def oom_kill_count(cgroup_dir: str | None) -> int | None:
    """OOM kills recorded for this sandbox's memory cgroup (v2 or v1); None if unknown."""
    if not cgroup_dir:
        return None
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(cgroup_dir, name)) as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return None


def _exit_fields(status: int) -> tuple[int | None, str | None]:
    if os.WIFSIGNALED(status):
        return None, signal.Signals(os.WTERMSIG(status)).name
    return os.WEXITSTATUS(status), None


def _kill_tree(pid: int) -> None:
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
