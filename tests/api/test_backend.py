"""The local backend seen from outside: sweeps, pools, files in the work dir."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.backends.local import LocalBackend
from app.executor import ExecutorResult
from tests.conftest import RunningApp
from tests.security.sandbox_checks import processes_of_uid, wait_until_no_process_of


def backend_of(api: RunningApp) -> LocalBackend:
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    return backend


def test_timeout_sweep_leaves_only_the_executor(api: RunningApp) -> None:
    """Before the sandbox is destroyed, the executor itself already killed the tree."""
    backend = backend_of(api)
    code = ("id -u\n( setsid bash -c 'sleep 3600 & sleep 3600' & ) \n"
            "(trap '' TERM HUP; sleep 3600) &\nsleep 3600\n")

    async def scenario() -> tuple[ExecutorResult, list[str]]:
        lease = await backend.acquire("bash", "s" * 21)
        try:
            result = await lease.executor.execute(lang="bash", code=code, args=[], timeout=2,
                                                  request_id="sweep", transport_timeout=30)
            uid = int(result.stdout.split()[0])
            names = [p.name() for p in processes_of_uid(uid)]
            return result, names
        finally:
            await backend.release(lease)

    result, names = api.run(scenario())
    assert result.status == "timeout"
    assert names == ["python3"], f"only the executor may remain, found {names}"
    assert wait_until_no_process_of(int(result.stdout.split()[0])) == []


@pytest.mark.attack("files")
def test_symlinks_and_fifos_are_never_followed(api: RunningApp) -> None:
    backend = backend_of(api)
    code = ("cd /mnt/data\necho regular > real.txt\nln -s /etc/passwd link\n"
            "ln -s /mnt/data/real.txt inner-link\nmkfifo pipe\nln real.txt hard\n"
            "mkdir -p sub/deeper && echo nested > sub/deeper/n.txt\nln -s /etc sub/etc\n")

    async def scenario() -> tuple[list[str], dict[str, bytes | None]]:
        lease = await backend.acquire("bash", "s" * 21)
        try:
            result = await lease.executor.execute(lang="bash", code=code, args=[], timeout=10,
                                                  request_id="links", transport_timeout=30)
            assert result.status == "ok", result
            listed = sorted(f["name"] for f in await lease.executor.list_files())
            reads = {name: await asyncio.wait_for(lease.executor.read_file(name), timeout=10)
                     for name in ("link", "inner-link", "pipe", "real.txt", "sub/etc/passwd",
                                  "sub/deeper/n.txt")}
            return listed, reads
        finally:
            await backend.release(lease)

    listed, reads = api.run(scenario())
    assert listed == ["hard", "real.txt", "sub/deeper/n.txt"]
    assert reads["link"] is None and reads["inner-link"] is None
    assert reads["pipe"] is None  # answered at once: a FIFO is never opened
    assert reads["sub/etc/passwd"] is None
    assert reads["real.txt"] == b"regular\n"
    assert reads["sub/deeper/n.txt"] == b"nested\n"


def _wait_for_warm(backend: LocalBackend, lang: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while backend.pool_counts()[lang].warm < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return backend.pool_counts()[lang].warm


def test_pool_hits_and_refills(api: RunningApp, client: Any) -> None:
    backend = backend_of(api)
    # The pool refills for the tenant it served last (a warm sandbox forked from another
    # tenant's zygote is never given to this one): serve this tenant once first.
    assert client.post("/exec", json={"lang": "py", "code": "print(1)"}).json()["code"] == 0
    assert _wait_for_warm(backend, "py") == 1
    hits_before = backend.stats["pool_hits"]
    body = client.post("/exec", json={"lang": "py", "code": "print(2)"}).json()
    assert body["stdout"] == "2\n"
    assert backend.stats["pool_hits"] == hits_before + 1
    assert _wait_for_warm(backend, "py") == 1, "the pool refills by itself"


@pytest.mark.parametrize("lang", ["bash"])
def test_cold_language_starts_on_demand(api: RunningApp, client: Any, lang: str) -> None:
    backend = backend_of(api)
    misses = backend.stats["pool_misses"]
    body = client.post("/exec", json={"lang": lang, "code": "echo cold"}).json()
    assert body["stdout"] == "cold\n"
    assert backend.stats["pool_misses"] == misses + 1
