"""The local-backend figures: baselines, warm latency, throughput, the stdout flood.

Each function measures and returns numbers; ``runner`` turns them into rows.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from .load import Connection, LoadResult, closed_loop, percentile
from .service import API_KEY, SECOND_KEY, Process

__all__ = ["CpuSplit", "Flood", "Latencies", "bare", "cpu_split", "flood", "phase_means",
           "pool_ready", "quiet", "scrape", "throughput", "warm_latency"]

HEADERS = {"X-API-Key": API_KEY}
#: A second tenant's key (``second``), for the per-tenant zygote figures.
SECOND_HEADERS = {"X-API-Key": SECOND_KEY}
PRINT = "print(1)"
PANDAS = "import pandas; print(pandas.__version__)"
#: 100 MB to stdout as fast as Python writes it; the executor's cap stops it first.
FLOOD = ("import sys\nchunk = 'x' * 65535 + '\\n'\n"
         "for _ in range(1600):\n    sys.stdout.write(chunk)\n")


def bare(python: Path, code: str, runs: int) -> list[float]:
    """``python -c code`` as a plain subprocess (no sandbox, no HTTP), ``runs`` times."""
    env = {"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir(), "LANG": "C.UTF-8"}
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([str(python), "-c", code], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return times


def scrape(process: Process) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{process.base_url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
         **labels: str) -> float:
    return sum(v for (n, lbl), v in samples.items()
               if n == name and all((k, val) in lbl for k, val in labels.items()))


def pool_ready(process: Process, language: str = "py", timeout: float = 60.0) -> bool:
    """Wait until the language's pool is full again (warm == target)."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(base_url=process.base_url, headers=HEADERS, timeout=10) as client:
        while time.perf_counter() < deadline:
            pool = client.get("/health/pool").json()["pools"][language]
            if pool["warm"] >= pool["target"]:
                return True
            time.sleep(0.01)
    return False


@dataclass
class Latencies:
    """Sequential warm executions: each sent when the pool is full."""

    values: list[float] = field(default_factory=list)
    misses: int = 0
    not_ok: int = 0

    def p(self, q: float) -> float:
        return percentile(self.values, q)


def warm_latency(process: Process, code: str, samples: int, max_seconds: float) -> Latencies:
    """``samples`` sequential ``/exec`` calls on one keep-alive connection (bounded in time)."""
    result = Latencies()
    before = scrape(process)

    async def run() -> None:
        connection = Connection(process.port, HEADERS)
        deadline = time.perf_counter() + max_seconds
        try:
            while len(result.values) < samples and time.perf_counter() < deadline:
                await asyncio.to_thread(pool_ready, process)
                began = time.perf_counter()
                status, body = await connection.post_json("/exec", {"lang": "py", "code": code})
                elapsed = time.perf_counter() - began
                if status == 200 and orjson.loads(body)["status"] == "ok":
                    result.values.append(elapsed)
                else:
                    result.not_ok += 1
        finally:
            await connection.close()

    asyncio.run(run())
    after = scrape(process)
    name = "k8si_pool_claims_total"
    result.misses = int(_sum(after, name, result="miss") - _sum(before, name, result="miss"))
    return result


@dataclass
class CpuSplit:
    """Where the CPU went during a load run, per execution (seconds)."""

    executions: int
    machine: float
    api: float
    client: float
    other_service: float = 0.0

    def per_exec(self, seconds: float) -> float:
        return seconds / self.executions if self.executions else float("nan")


def _machine_busy() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def quiet(max_busy: float = 0.25, window: float = 0.5, timeout: float = 30.0) -> bool:
    """Wait until the machine is quiet: in one ``window`` its cores were busy at most
    ``max_busy`` of the time (a service's start-up work, such as a zygote importing the
    data stack at a low priority, is over). False if it never was within ``timeout``."""
    cores = os.cpu_count() or 1
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        before = _machine_busy()
        time.sleep(window)
        if (_machine_busy() - before) / (window * cores) <= max_busy:
            return True
    return False


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def throughput(process: Process, code: str, concurrency: int, duration: float,
               warmup: float, *, tenants: int = 1) -> tuple[LoadResult, CpuSplit]:
    """Closed-loop load at ``concurrency``; with the CPU split over the window.
    ``tenants=2``: the workers alternate between two tenants' keys."""
    machine0, api0, client0 = _machine_busy(), process.cpu_seconds(), _self_cpu()
    headers = [HEADERS, SECOND_HEADERS][:tenants]
    result = asyncio.run(closed_loop(process.port, headers, "/exec", {"lang": "py", "code": code},
                                     concurrency=concurrency, duration=duration, warmup=warmup))
    split = CpuSplit(executions=result.answered,
                     machine=_machine_busy() - machine0, api=process.cpu_seconds() - api0,
                     client=_self_cpu() - client0)
    return result, split


def cpu_split(result: LoadResult, split: CpuSplit) -> str:
    """One line: CPU per execution by component during the run."""
    per = split.per_exec
    sandbox = split.machine - split.api - split.client
    return (f"c={result.concurrency}: {result.rate:.1f}/s; CPU per execution "
            f"{per(split.machine) * 1000:.1f} ms = API process {per(split.api) * 1000:.1f} + "
            f"load client {per(split.client) * 1000:.1f} + sandboxes, kernel and the rest "
            f"{per(sandbox) * 1000:.1f}; ceiling on 2 cores "
            f"{2 / per(split.machine) if split.executions else 0:.0f}/s")


def phase_means(before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                after: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Mean seconds per phase between two scrapes."""
    means = {}
    phases = {dict(lbl)["phase"] for (n, lbl) in after if n == "k8si_execution_phase_seconds_sum"}
    for phase in sorted(phases):
        total = (_sum(after, "k8si_execution_phase_seconds_sum", phase=phase)
                 - _sum(before, "k8si_execution_phase_seconds_sum", phase=phase))
        count = (_sum(after, "k8si_execution_phase_seconds_count", phase=phase)
                 - _sum(before, "k8si_execution_phase_seconds_count", phase=phase))
        if count:
            means[phase] = total / count
    total = (_sum(after, "k8si_execution_duration_seconds_sum")
             - _sum(before, "k8si_execution_duration_seconds_sum"))
    count = (_sum(after, "k8si_execution_duration_seconds_count")
             - _sum(before, "k8si_execution_duration_seconds_count"))
    if count:
        means["total (in the service)"] = total / count
    return means


@dataclass
class Flood:
    """One 100 MB stdout flood: response time, output kept, API memory growth."""

    latency: float
    status: str
    stdout_bytes: int
    rss_growth: int


def flood(process: Process) -> Flood:
    """Run the flood while sampling the API's RSS (peak counter reset first)."""
    pool_ready(process)
    baseline = process.rss()
    peak = baseline
    has_hwm = process.reset_peak()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    response = httpx.post(f"{process.base_url}/exec", headers=HEADERS, timeout=120,
                          json={"lang": "py", "code": FLOOD})
    latency = time.perf_counter() - began
    done.set()
    sampler.join()
    if has_hwm:
        peak = max(peak, process.peak_rss())
    body = response.json()
    return Flood(latency=latency, status=str(body.get("status")),
                 stdout_bytes=len(body.get("stdout", "").encode()), rss_growth=peak - baseline)
