"""The executor's HTTP server as a process: readiness (``/health?wait``), its answer,
and a calibration sandbox's ``/calibration``.

The warm interpreter preloads a module that waits for a gate file, so the test
decides when the sandbox becomes ready (no timing involved).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import prefault
from tests.conftest import REPO


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("sandbox", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(self.path))


def _call(path: Path, method: str, target: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = _UnixConnection(path)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, target, body=payload, headers={
            **({"Content-Type": "application/json"} if payload else {}), **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def gated_executor(tmp_path: Path, runtime_dir: Path) -> Iterator[tuple[Path, Path]]:
    """An executor whose warm interpreter is ready once ``gate`` exists."""
    modules, gate = tmp_path / "modules", tmp_path / "gate"
    modules.mkdir()
    (modules / "gated_import.py").write_text(
        f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)\n")
    (tmp_path / "work").mkdir()
    sock = tmp_path / "executor.sock"
    python_bin = runtime_dir / "python" / "bin"
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--lang", "py", "--unix", str(sock),
         "--serve-unbound",
         "--workdir", str(tmp_path / "work"), "--build-dir", str(tmp_path / "build"),
         "--preload", "gated_import", "--env", f"PATH={python_bin}:/usr/bin:/bin",
         "--env", f"PYTHONPATH={modules}", "--env", f"HOME={tmp_path}"],
        cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            if sock.exists():
                break
            time.sleep(0.01)
        yield sock, gate
    finally:
        process.kill()
        process.wait()


def test_health_wait_answers_when_the_sandbox_is_ready(
        gated_executor: tuple[Path, Path]) -> None:
    sock, gate = gated_executor
    waited: list[tuple[int, Any]] = []
    waiter = threading.Thread(target=lambda: waited.append(
        _call(sock, "GET", "/health?wait=60")))
    waiter.start()
    # Meanwhile, probes that do not wait are answered at once: still starting.
    for target in ("/health", "/health?wait=0", "/health?wait=nonsense", "/health?wait=-5"):
        status, body = _call(sock, "GET", target)
        assert (status, body["status"]) == (503, "starting"), target
    assert waited == []  # the waiting request is still held
    gate.touch()
    waiter.join(timeout=60)
    assert waited and waited[0][0] == 200 and waited[0][1]["status"] == "ready"
    assert _call(sock, "GET", "/health")[0] == 200
    status, result = _call(sock, "POST", "/execute", {"lang": "py", "code": "print(6 * 7)"})
    assert status == 200 and result["stdout"] == "42\n" and result["files"] == []


def _executor(tmp_path: Path, runtime_dir: Path, *extra: str,
              serve_unbound: bool = True) -> tuple[subprocess.Popen[bytes], Path]:
    """A py executor on a unix socket; ``serve_unbound``: token-less requests served
    until a token binds it (the tests' default; the API's executors never are)."""
    (tmp_path / "work").mkdir()
    sock = tmp_path / "executor.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--lang", "py", "--unix", str(sock),
         *(["--serve-unbound"] if serve_unbound else []),
         "--workdir", str(tmp_path / "work"), "--build-dir", str(tmp_path / "build"),
         "--preload", "json", "--env", f"PATH={runtime_dir / 'python' / 'bin'}:/usr/bin:/bin",
         "--env", f"HOME={tmp_path}", *extra],
        cwd=REPO, stderr=subprocess.DEVNULL)
    for _ in range(3000):  # bound and listening (the file appears before listen())
        if sock.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(str(sock)) == 0:
                    break
        time.sleep(0.01)
    return process, sock


def test_a_calibration_sandbox_reports_the_pages_its_execution_wrote(
        tmp_path: Path, runtime_dir: Path) -> None:
    process, sock = _executor(tmp_path, runtime_dir, "--calibrate")
    try:
        assert _call(sock, "GET", "/health?wait=60")[0] == 200
        status, body = _call(sock, "GET", "/calibration")
        assert status == 404 and "no execution yet" in body["message"]
        status, result = _call(sock, "POST", "/execute", {"lang": "py", "code": "print(1)"})
        assert (status, result["stdout"]) == (200, "1\n")
        status, pages = _call(sock, "GET", "/calibration")
        assert status == 200 and sorted(pages) == ["executor", "worker"]
        for side in ("executor", "worker"):  # well-formed, and the run did write some
            assert sum(count for _, count in prefault.parse_ranges(pages[side])) > 0, side
    finally:
        process.kill()
        process.wait()


def test_an_ordinary_sandbox_reports_no_calibration(tmp_path: Path, runtime_dir: Path) -> None:
    process, sock = _executor(tmp_path, runtime_dir)
    try:
        status, result = _call(sock, "POST", "/execute", {"lang": "py", "code": "print(1)"})
        assert (status, result["stdout"]) == (200, "1\n")
        assert _call(sock, "GET", "/calibration")[0] == 404
        assert not (tmp_path / "build" / prefault.WORKER_PAGES_FILE).exists()
    finally:
        process.kill()
        process.wait()


def _raw(sock_path: Path, data: bytes) -> bytes:
    """Send ``data`` as it is; everything the executor answers until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(sock_path))
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_heads_read_without_the_email_parser(tmp_path: Path, runtime_dir: Path) -> None:
    """The executor's own head reader (``request_head``): bad heads get the standard
    handler's answers and close; good ones keep the connection for the next request."""
    process, sock = _executor(tmp_path, runtime_dir)
    try:
        for head, status in ((b"GET /health HTTP/2.0\r\n\r\n", b"505"),
                             (b"GET /health\r\n\r\n", b"400"),
                             (b"GET /health HTTP/1.1\r\nbad header\r\n\r\n", b"400"),
                             (b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"431")):
            assert _raw(sock, head).split(b" ", 2)[1] == status, head
        # Two requests on one connection (keep-alive), the second one closing it.
        answers = _raw(sock, b"GET /health?wait=60 HTTP/1.1\r\nHost: s\r\n\r\n"
                             b"GET /files HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answers.count(b"HTTP/1.1 200 OK") == 2, answers
        code, result = _call(sock, "POST", "/execute", {"lang": "py", "code": "print(1)"})
        assert (code, result["stdout"]) == (200, "1\n")
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def ready_executor(tmp_path: Path, runtime_dir: Path, *extra: str,
                   serve_unbound: bool = True) -> Iterator[Path]:
    """``_executor`` once its warm interpreter is ready; its socket. Killed after."""
    process, sock = _executor(tmp_path, runtime_dir, *extra, serve_unbound=serve_unbound)
    try:
        assert _call(sock, "GET", "/health?wait=60")[0] == 200
        yield sock
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def short_compile(tmp_path: Path, runtime_dir: Path) -> Iterator[Path]:
    """An executor whose ``--compile-timeout`` (1 s) is shorter than the runs it is sent."""
    with ready_executor(tmp_path, runtime_dir, "--compile-timeout", "1") as sock:
        yield sock


def test_warm_python_gets_its_own_timeout_of_cpu_not_the_compile_timeout(
        short_compile: Path) -> None:
    """The worker started under the compile timeout; the run's own limit is its timeout."""
    code = ("import time\nstart = time.process_time()\n"
            "while time.process_time() - start < 2.5:\n    pass\nprint('done')\n")
    status, result = _call(short_compile, "POST", "/execute",
                           {"lang": "py", "code": code, "timeout": 8})
    assert status == 200 and (result["status"], result["stdout"]) == ("ok", "done\n"), result


def test_the_cpu_limit_still_ends_a_run_at_its_timeout(short_compile: Path) -> None:
    status, result = _call(short_compile, "POST", "/execute",
                           {"lang": "py", "code": "while True:\n    pass\n", "timeout": 2})
    assert status == 200 and result["status"] == "timeout", result


def _execute_once(tmp_path: Path, runtime_dir: Path, code: str) -> tuple[int, Any]:
    """One Python execution in a fresh executor, stopped afterwards."""
    process, sock = _executor(tmp_path, runtime_dir)
    try:
        return _call(sock, "POST", "/execute", {"lang": "py", "code": code})
    finally:
        process.kill()
        process.wait()


def test_a_program_killed_by_a_real_time_signal_is_a_result(tmp_path: Path,
                                                            runtime_dir: Path) -> None:
    status, result = _execute_once(tmp_path, runtime_dir, (
        "import os, signal\nprint('before', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGRTMIN + 6)\n"))
    assert status == 200 and result["signal"] == "SIGRTMIN+6", result
    assert result["stdout"] == "before\n" and result["exit_code"] is None


def test_a_file_name_that_is_not_utf8_is_listed_as_skipped(tmp_path: Path,
                                                           runtime_dir: Path) -> None:
    status, result = _execute_once(tmp_path, runtime_dir, (
        "import os\nopen(os.fsencode(os.getcwd()) + b'/\\xff.txt', 'w').write('x')\n"
        "open('ok.txt', 'w').write('y')\nprint('hello')\n"))
    assert status == 200 and result["stdout"] == "hello\n", result
    listed = {entry["name"]: entry for entry in result["files"]}
    assert listed["ok.txt"]["size"] == 1 and not listed["ok.txt"].get("skipped")
    assert "not valid UTF-8" in listed["\ufffd.txt"]["skipped"]
