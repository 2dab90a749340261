"""The services under test as child processes: ``k8si serve`` and the naive service.

Each gets its own data dir and a free loopback port. ``cold_start`` measures what
Knative pays on a scale from zero: process start to the first ``GET /health`` 200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["API_KEY", "SECOND_KEY", "Process", "cold_start", "factory", "free_port", "runtime_dir",
           "start_naive", "start_service"]

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-0123456789abcdef"
SECOND_KEY = "bench-second-tenant-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runtime_dir() -> Path:
    """The sandbox Python runtime: ``RUNTIME_DIR``, else one that already exists here."""
    if os.environ.get("RUNTIME_DIR"):
        return Path(os.environ["RUNTIME_DIR"]).absolute()
    for candidate in (REPO / ".k8si" / "runtime", REPO / ".k8si-test" / "runtime"):
        if (candidate / "k8si-runtime.json").exists():
            return candidate
    return REPO / ".k8si" / "runtime"


def _clean_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(extra)
    return env


class Process:
    """A child process serving HTTP on ``port``, stopped with ``stop()``."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self.started = time.perf_counter()
        with log.open("ab") as handle:
            self.popen = subprocess.Popen(argv, env=env, cwd=REPO, stdout=handle,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_health(self, timeout: float = 120.0, interval: float = 0.005) -> float:
        """Seconds from process start to the first ``/health`` 200."""
        deadline = time.perf_counter() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.log_path.name}: exited with "
                                       f"{self.popen.returncode}; see {self.log_path}")
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(interval)
        raise RuntimeError(f"{self.log_path.name}: no /health within {timeout}s")

    def rss(self) -> int:
        """Resident set size of the process now (bytes)."""
        return _status_kb(self.pid, "VmRSS") * 1024

    def reset_peak(self) -> bool:
        """Reset the peak RSS counter (``VmHWM``); False where the kernel refuses."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss(self) -> int:
        return _status_kb(self.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def factory() -> str:
    """The sandbox factory of the service measured: the zygote (the service's default);
    ``BENCH_SANDBOX_FACTORY=nsjail`` measures the fallback instead."""
    return os.environ.get("BENCH_SANDBOX_FACTORY", "zygote")


def start_service(work: Path, name: str, **env: str) -> Process:
    """``k8si serve`` (``python -m app serve``) with its own data dir and port."""
    port = free_port()
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    full_env = _clean_env(DATA_DIR=str(data), RUNTIME_DIR=str(runtime_dir()),
                          API_KEYS=f"{API_KEY},second:{SECOND_KEY}", LOG_LEVEL="WARNING",
                          **{"SANDBOX_FACTORY": factory(), **env})
    return Process([sys.executable, "-m", "app", "serve", "--port", str(port)], full_env, port,
                   work / f"{name}.log")


def start_naive(work: Path) -> Process:
    port = free_port()
    return Process([sys.executable, "-m", "bench.naive", "--port", str(port), "--runtime-dir",
                    str(runtime_dir()), "--work-dir", str(work / "naive")], _clean_env(), port,
                   work / "naive.log")


def cold_start(work: Path, runs: int, **env: str) -> list[float]:
    """Process start to first ``/health`` 200 of ``k8si serve``, ``runs`` times."""
    times = []
    for index in range(runs):
        process = start_service(work, f"cold-{index}", **env)
        try:
            times.append(process.wait_health(timeout=60))
        finally:
            process.stop()
    return times
