"""The order of one benchmark run, and the rows it produces.

Baselines first (bare spawn, bare import, the naive service), then the real
service with the local backend (warm latency, throughput at concurrency 1, 8 and
32, the stdout flood, Python state capture and restore by size), then the
local cold starts, then the Kubernetes path against a real control plane
(``bench.kube``). Each step is bounded in samples and seconds.
``Options.kubernetes_only`` runs the Kubernetes path alone and writes no report.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.backends.local.runtime import ensure_runtime

from . import figures, kernel, kube, runtime_sessions, state, zygotes
from .load import LoadResult, closed_loop, percentile
from .report import Row, ms, render_text, write_markdown
from .service import Process, cold_start, factory, runtime_dir, start_naive, start_service

__all__ = ["Options", "run"]

_P50, _P99 = 0.5, 0.99
SANDBOX_FACTORY_NOTE = (
    "`SANDBOX_FACTORY={}` for every row not marked otherwise (the service's default, "
    "`BENCH_SANDBOX_FACTORY` to change it); the rows marked \"nsjail factory\" measure the "
    "fallback in the same run: with nsjail every Python sandbox pays a full interpreter start "
    "and the pandas import at warm-up, about a second of CPU)")
_LIMITS = {"RATE_LIMIT_TENANT": "1000000", "RATE_LIMIT_KEY": "1000000",
           "TENANT_EXECUTIONS_PER_WINDOW": "1000000", "TENANT_CONCURRENT_EXECUTIONS": "0"}


@dataclass
class Options:
    """How much to measure, and where to write the report."""

    quick: bool = False
    kubernetes: bool = True
    kubernetes_only: bool = False
    profile: bool = False
    output: Path | None = Path("BENCHMARKS.md")
    pool_size: int = 8
    command: str = "nox -s bench"


def _naive(work: Path, duration: float, levels: tuple[int, ...],
           samples: int) -> tuple[list[float], dict[int, LoadResult], LoadResult]:
    naive = start_naive(work)
    try:
        naive.wait_health()
        latencies = asyncio.run(_sequential(naive, samples))
        loads = {c: asyncio.run(closed_loop(naive.port, {}, "/exec", {"code": figures.PRINT},
                                            concurrency=c, duration=duration, warmup=1.0))
                 for c in levels}
        pandas = asyncio.run(closed_loop(naive.port, {}, "/exec", {"code": figures.PANDAS},
                                         concurrency=8, duration=duration, warmup=1.0))
    finally:
        naive.stop()
    return latencies, loads, pandas


async def _sequential(process: Process, samples: int) -> list[float]:
    from .load import Connection

    connection = Connection(process.port)
    times = []
    try:
        for _ in range(samples):
            began = time.perf_counter()
            await connection.post_json("/exec", {"code": figures.PRINT})
            times.append(time.perf_counter() - began)
    finally:
        await connection.close()
    return times


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return None
    return subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", "200", "--nonblocking",
                             "--duration", str(int(seconds)), "--pid", str(pid), "--output",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _top_frames(raw: Path, limit: int = 15) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "(no samples)"

    def table(counts: dict[str, int]) -> str:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return "\n".join(f"{n * 100 / total:5.1f}%  {name}" for name, n in ranked)

    return (f"{total} samples of the API process (py-spy, 200 Hz, idle included).\n\n"
            f"Self time:\n```\n{table(own)}\n```\n\nInclusive:\n```\n{table(inclusive)}\n```")


def _run_kubernetes_only(options: Options) -> list[Row]:
    """Only the Kubernetes rows, printed (a partial run never writes the report)."""
    ensure_runtime(runtime_dir(), log=False)  # the node agent's sandboxes
    work = Path(tempfile.mkdtemp(prefix="k8si-bench-"))
    try:
        rows = _kube_rows(work, options.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render_text(rows), flush=True)
    return rows


def run(options: Options) -> list[Row]:
    if options.kubernetes_only:
        return _run_kubernetes_only(options)
    quick = options.quick
    work = Path(tempfile.mkdtemp(prefix="k8si-bench-"))
    python = ensure_runtime(runtime_dir(), log=False).python
    rows: list[Row] = []
    notes: dict[str, str] = {}
    levels = (1, 8, 32)
    duration = 4.0 if quick else 8.0
    try:
        spawn = figures.bare(python, figures.PRINT, 15 if quick else 40)
        imports = figures.bare(python, "import pandas", 5 if quick else 12)
        spawn50, import50 = percentile(spawn, _P50), percentile(imports, _P50)
        rows += [Row("baseline: bare spawn `python3 -c 'print(1)'`, P50", ms(spawn50)),
                 Row("baseline: bare `python3 -c 'import pandas'`, P50", ms(import50))]
        naive_seq, naive_load, naive_pandas = _naive(work, duration, levels,
                                                     20 if quick else 40)
        naive50 = percentile(naive_seq, _P50)
        rows.append(Row("baseline: naive service `/exec` print(1), sequential P50", ms(naive50),
                        f"bare spawn {ms(spawn50)}", f"{naive50 / spawn50:.2f}x"))

        service = start_service(work, "service", POD_POOL_PY=str(options.pool_size), **_LIMITS)
        try:
            service.wait_health()
            figures.pool_ready(service, timeout=180)
            # The targets are for a quiet machine: the service's own start-up work (the
            # spare zygote's imports, at a low priority) over, then a few requests
            # not counted (first-use costs of the API's code paths).
            quiet = figures.quiet()
            figures.warm_latency(service, figures.PRINT, 20, 30)
            before = figures.scrape(service)
            warm = figures.warm_latency(service, figures.PRINT, 100 if quick else 300,
                                        45 if quick else 120)
            notes["Phases of a warm print(1), sequential (mean, from /metrics)"] = "\n".join(
                f"- {name}: {sec * 1000:.2f} ms" for name, sec in
                figures.phase_means(before, figures.scrape(service)).items())
            pandas = figures.warm_latency(service, figures.PANDAS, 20 if quick else 60,
                                          30 if quick else 60)
            p50, p99, pd50 = warm.p(_P50), warm.p(_P99), pandas.p(_P50)
            misses = (f" ({len(warm.values)} runs, {warm.misses} pool misses"
                      f"{'' if quiet else '; the machine was never quiet before them'})")
            rows += [
                Row("warm `/exec` print(1), P50" + misses, ms(p50), f"bare spawn {ms(spawn50)}",
                    f"{p50 / spawn50:.2f}x", "<= 0.3x", p50 <= 0.3 * spawn50),
                Row("warm `/exec` print(1), P99", ms(p99), f"bare spawn {ms(spawn50)}",
                    f"{p99 / spawn50:.2f}x", "<= 1x", p99 <= 1.0 * spawn50),
                Row(f"warm `/exec` import pandas, P50 ({len(pandas.values)} runs, "
                    f"{pandas.misses} misses)", ms(pd50), f"bare import {ms(import50)}",
                    f"{pd50 / import50:.2f}x", "<= 0.1x", pd50 <= 0.1 * import50),
            ]
            splits = []
            single_tenant_rate = 0.0
            for level in levels:
                figures.pool_ready(service, timeout=120)
                before = figures.scrape(service)
                load, split = figures.throughput(service, figures.PRINT, level, duration, 2.0)
                splits.append(figures.cpu_split(load, split))
                naive = naive_load[level]
                ratio = load.rate / naive.rate if naive.rate else float("inf")
                target, passed = "", None
                if level == 8:
                    single_tenant_rate = load.rate
                    rows.append(Row("sustained throughput print(1), concurrency 8, single-use "
                                    "sandboxes", f"{load.rate:.1f}/s", "", "", ">= 60/s",
                                    load.rate >= 60))
                    notes["Phases at concurrency 8 (mean per execution, from /metrics)"] = \
                        "\n".join(f"- {name}: {sec * 1000:.2f} ms" for name, sec in
                                  figures.phase_means(before, figures.scrape(service)).items())
                lat50, lat99 = percentile(load.latencies, _P50), percentile(load.latencies, _P99)
                rows.append(Row(
                    f"throughput print(1), concurrency {level} (P50 {ms(lat50)}, "
                    f"P99 {ms(lat99)}, {load.errors} errors)",
                    f"{load.rate:.1f}/s", f"naive {naive.rate:.1f}/s", f"{ratio:.2f}x", target,
                    passed))
            if options.profile:  # a run of its own: the sampler's cost stays out of the figures
                figures.pool_ready(service, timeout=120)
                spy = _profile(service.pid, duration, work / "profile.txt")
                perf = kernel.start(duration, work / "perf.data")
                if spy is not None or perf is not None:
                    figures.throughput(service, figures.PRINT, 8, duration, 0.0)
                if spy is not None:
                    spy.wait(60)
                    notes["Profile of the API process at concurrency 8 (an extra run)"] = \
                        _top_frames(work / "profile.txt")
                if perf is not None:
                    perf.wait(60)
                    notes["Kernel profile of the sandboxes at concurrency 8 (the same run)"] = \
                        kernel.summary(work / "perf.data")
            figures.pool_ready(service, timeout=120)
            load, split = figures.throughput(service, figures.PANDAS, 8, duration, 2.0)
            splits.append(figures.cpu_split(load, split) + " (import pandas)")
            preloading = load.rate / naive_pandas.rate if naive_pandas.rate else float("inf")
            rows.append(Row(
                f"throughput import pandas, concurrency 8 ({load.errors} errors), against the "
                f"naive service importing it per request", f"{load.rate:.1f}/s",
                f"naive {naive_pandas.rate:.1f}/s", f"{preloading:.1f}x", ">= 10x",
                preloading >= 10))
            rows += zygotes.tenant_rows(service, duration, single_tenant_rate)
            notes["CPU per execution under load"] = "\n".join(f"- {s}" for s in splits)
            floods = [figures.flood(service) for _ in range(2 if quick else 3)]
            growth = max(f.rss_growth for f in floods) / 1024 / 1024
            slowest = max(f.latency for f in floods)
            rows += [
                Row(f"stdout flood 100 MB: API RSS growth (max of {len(floods)})",
                    f"{growth:.1f} MB", "", "", "< 20 MB", growth < 20),
                Row(f"stdout flood 100 MB: response time (status {floods[0].status}, "
                    f"{floods[0].stdout_bytes // 1024} KiB kept)", ms(slowest),
                    f"warm print(1) {ms(p50)}", "", "<= 1 s after the cap",
                    slowest - p50 <= 1.0),
            ]
            rows += state.rows(state.measure(service, python, quick))
            rows += runtime_sessions.rows(service, p50, quick)
        finally:
            service.stop()

        if factory() == "zygote":  # the fallback beside the default, in the same run
            rows += zygotes.nsjail_rows(work, duration, spawn50, _LIMITS, options.pool_size)
        colds = cold_start(work, 3 if quick else 5, POD_POOL_PY="2", **_LIMITS)
        rows.append(Row(f"API cold start to first /health 200, local backend (P50 of "
                        f"{len(colds)}, max {ms(max(colds))})", ms(percentile(colds, _P50)),
                        f"bare spawn {ms(spawn50)}", f"{percentile(colds, _P50) / spawn50:.0f}x",
                        "<= 1 s", max(colds) <= 1.0))
        if options.kubernetes:
            rows += _kube_rows(work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render_text(rows), flush=True)
    if options.output is not None:
        analysis = Path(__file__).with_name("analysis.md")
        if analysis.exists():
            notes["Closing note"] = analysis.read_text()
        write_markdown(options.output, rows, notes, options.command,
                       facts={"sandbox factory": SANDBOX_FACTORY_NOTE.format(factory())})
    return rows


def _kube_rows(work: Path, quick: bool) -> list[Row]:
    return kube.rows(kube.measure(work, claims=5 if quick else 12, race=16 if quick else 24,
                                  cold_runs=2 if quick else 4))
