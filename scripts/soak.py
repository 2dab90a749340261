#!/usr/bin/env python3
"""Soak run (``nox -s soak``, not in CI): steady mixed load for a while, then a report.

It starts ``k8si serve`` with the local backend on a free loopback port (or uses
``--url``), sends a mix of languages and sizes at a fixed rate for ``--duration``
seconds from ``--tenants`` tenants in turn, and reports unexpected errors, latency
percentiles, the API's and Valkey's memory and the running zygotes over time (their
generations: started, retired), and sandboxes left behind. Traffic goes to 127.0.0.1 only; every
loop is bounded in count and time.

    python scripts/soak.py --duration 600 --rate 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent

# (language, code, what a correct answer holds)
WORKLOAD: list[tuple[str, str, str]] = [
    ("py", "print(sum(range(10)))", "45"),
    ("py", "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2]})['a'].sum())", "3"),
    ("py", "print('x' * 200_000)", "xxxx"),
    ("bash", "echo soak > /mnt/data/out.txt; echo done", "done"),
    ("js", "console.log([1,2,3].map(x => x * 2).join(','))", "2,4,6"),
    ("c", "#include <stdio.h>\nint main(void){puts(\"c ok\");return 0;}", "c ok"),
    ("py", "import time\ntime.sleep(0.5)\nprint('slept')", "slept"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tenant_keys(key: str, tenants: int) -> list[str]:
    """The first tenant's key as given; the others derived from it (tenant ``tN``)."""
    return [key, *(f"{key}-t{number}" for number in range(2, tenants + 1))]


def start_server(data_dir: Path, port: int, keys: list[str]) -> subprocess.Popen[bytes]:
    configured = ",".join([keys[0], *(f"t{n}:{k}" for n, k in enumerate(keys[1:], start=2))])
    env = {**os.environ, "DATA_DIR": str(data_dir), "API_KEYS": configured, "POD_POOL_PY": "4",
           "POD_POOL_BASH": "2", "MAX_CONCURRENT_EXECUTIONS": "8", "RATE_LIMIT_TENANT": "0",
           "RATE_LIMIT_KEY": "0", "TENANT_EXECUTIONS_PER_WINDOW": "0",
           "TENANT_CONCURRENT_EXECUTIONS": "0", "LOG_LEVEL": "WARNING"}
    env.pop("VALKEY_URL", None)
    return subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def valkey_mb(server_pid: int) -> float:
    for child in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a sandbox may end while it is looked at
            if "valkey-server" in child.name():
                return child.memory_info().rss / 2**20
    return float("nan")


def zygotes(server_pid: int) -> tuple[int, float]:
    """The server's running zygotes (not their sandboxes): how many, their RSS in MB."""
    mark = "sidecar.zygote import server"
    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a sandbox may end while it is looked at
            parent = child.parent()
            if mark in " ".join(child.cmdline()) and (
                    parent is None or mark not in " ".join(parent.cmdline())):
                found.append(child)
    rss = 0
    for child in found:
        with contextlib.suppress(psutil.Error):
            rss += child.memory_info().rss
    return len(found), rss / 2**20


def leftovers(data_dir: Path) -> int:
    """Processes of this server's sandboxes (or its Valkey) still alive after it stopped."""
    return sum(1 for p in psutil.process_iter(["cmdline", "status"])
               if p.info["status"] != psutil.STATUS_ZOMBIE
               and str(data_dir) in " ".join(p.info["cmdline"] or []))


async def one(client: httpx.AsyncClient, key: str, index: int, latencies: list[float],
              errors: list[str]) -> None:
    lang, code, expected = WORKLOAD[index % len(WORKLOAD)]
    started = time.monotonic()
    try:
        response = await client.post("/exec", json={"lang": lang, "code": code},
                                     headers={"X-API-Key": key})
    except httpx.HTTPError as exc:
        errors.append(f"{lang}: {exc!r}")
        return
    latencies.append(time.monotonic() - started)
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    if response.status_code != 200 or body.get("status") != "ok" \
            or expected not in body.get("stdout", ""):
        errors.append(f"{lang}: HTTP {response.status_code} {str(body or response.text)[:200]}")


def sample(started: float, server_pid: int) -> tuple[float, float, float, int, float]:
    count, rss = zygotes(server_pid)
    return (time.monotonic() - started, rss_mb(server_pid), valkey_mb(server_pid), count, rss)


async def soak(url: str, keys: list[str], duration: float, rate: float,
               server_pid: int | None) -> int:
    latencies: list[float] = []
    errors: list[str] = []
    samples: list[tuple[float, float, float, int, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        index = 0
        next_sample = started
        while (now := time.monotonic()) - started < duration:
            key = keys[(index // len(WORKLOAD)) % len(keys)]
            task = asyncio.create_task(one(client, key, index, latencies, errors))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
            if server_pid is not None and now >= next_sample:
                samples.append(sample(started, server_pid))
                next_sample += 30
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        health = await client.get("/health/detailed", headers={"X-API-Key": keys[0]})
    if server_pid is not None:
        samples.append(sample(started, server_pid))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0

    print(f"\nsoak: {index} requests in {elapsed:.0f} s ({index / elapsed:.2f}/s), "
          f"{len(errors)} unexpected errors")
    print(f"latency ms: p50 {pct(0.5):.0f}  p90 {pct(0.9):.0f}  p99 {pct(0.99):.0f}  "
          f"max {pct(1.0):.0f}  mean {statistics.fmean(latencies) * 1000 if latencies else 0:.0f}")
    if samples:
        print("over time (s, API RSS MB, Valkey RSS MB, zygotes running, their RSS MB):")
        for at, api, store, count, zygote_rss in samples:
            print(f"  {at:6.0f}  {api:7.1f}  {store:7.1f}  {count:3d}  {zygote_rss:7.1f}")
    backend = health.json().get("services", {}).get("backend", {}) \
        if health.status_code == 200 else {}
    print(f"sandbox factory: {backend.get('sandbox_factory')}; zygote generations: "
          f"{backend.get('zygotes')}")
    for error in errors[:20]:
        print("error:", error)
    return len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--api-key", default="soak-key-0123456789")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=6.0, help="requests per second")
    parser.add_argument("--tenants", type=int, default=2,
                        help="tenants taking turns (their keys derived from --api-key)")
    args = parser.parse_args()
    keys = tenant_keys(args.api_key, max(1, args.tenants))
    if args.url:
        return 1 if asyncio.run(soak(args.url, keys[:1], args.duration, args.rate,
                                     None)) else 0
    with tempfile.TemporaryDirectory(prefix="k8si-soak-") as tmp:
        port = free_port()
        server = start_server(Path(tmp), port, keys)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        print("soak: the server did not start")
                        return 2
                    time.sleep(0.2)
            time.sleep(5)  # let the warm pools fill
            failures = asyncio.run(soak(f"http://127.0.0.1:{port}", keys,
                                        args.duration, args.rate, server.pid))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        time.sleep(2)
        leaked = leftovers(Path(tmp))
        print(f"sandbox processes left after shutdown: {leaked}")
        return 1 if failures or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
