"""What the sandbox factory costs: zygote generations, and the nsjail factory beside it.

Per-tenant zygote generations (``app/backends/local/generations.py``) cost CPU (each
zygote imports the data stack once) and memory (each zygote is a process of its own);
two tenants alternating also cost pool hits (a warm sandbox of one tenant's zygote is
never given to the other). The nsjail factory, the fallback and the reference, is
measured in the same run for comparison.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import figures
from .load import percentile
from .report import Row
from .service import Process, start_service

__all__ = ["ZygoteCost", "nsjail_rows", "tenant_rows", "zygote_cost"]

_P50 = 0.50
_MARK = "from sidecar.zygote import server"


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            queue.append(child)
    return found


class ZygoteCost:
    """The service's running zygotes: how many, their memory and their own CPU."""

    def __init__(self, count: int, pss_mb: list[float], cpu_seconds: list[float]) -> None:
        self.count = count
        self.pss_mb = pss_mb
        self.cpu_seconds = cpu_seconds


def zygote_cost(process: Process) -> ZygoteCost:
    pss, cpu = [], []
    for pid in _descendants(process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if _MARK not in cmdline or "python" not in cmdline.split()[0]:
                continue
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # A zygote is a python whose parent is not itself a zygote (its sandboxes are).
        parent = int(stat[1])
        try:
            parent_cmd = Path(f"/proc/{parent}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            parent_cmd = ""
        if _MARK in parent_cmd.replace("\0", " "):
            continue
        kb = next((int(line.split()[1]) for line in rollup if line.startswith("Pss:")), 0)
        pss.append(kb / 1024)
        cpu.append((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"))
    return ZygoteCost(len(pss), pss, cpu)


def tenant_rows(service: Process, duration: float, single: float) -> list[Row]:
    """Two tenants at concurrency 8 against one tenant's rate, and the zygotes' cost."""
    figures.pool_ready(service, timeout=120)
    load, _ = figures.throughput(service, figures.PRINT, 8, duration, 2.0, tenants=2)
    cost = zygote_cost(service)
    lat50 = percentile(load.latencies, _P50) if load.latencies else 0.0
    rows = [Row(f"throughput print(1), concurrency 8, two tenants alternating (per-tenant "
                f"zygotes; P50 {lat50 * 1000:.1f} ms, {load.errors} errors)",
                f"{load.rate:.1f}/s", f"one tenant {single:.1f}/s",
                f"{load.rate / single if single else 0:.2f}x")]
    if cost.count:
        # The spare has forked nothing for anyone yet: its CPU is what a start costs.
        rows.append(Row(
            f"zygote generation: memory of each running zygote (largest of {cost.count}: two "
            f"tenants' and the spare) and the CPU of one start (the spare's own)",
            f"{max(cost.pss_mb):.0f} MB PSS", f"start {min(cost.cpu_seconds):.2f} s CPU", ""))
    return rows


def nsjail_rows(work: Path, duration: float, spawn50: float, limits: dict[str, str],
                pool_size: int) -> list[Row]:
    """The nsjail factory (the fallback and the posture reference), same figures."""
    service = start_service(work, "nsjail", SANDBOX_FACTORY="nsjail",
                            POD_POOL_PY=str(pool_size), **limits)
    try:
        service.wait_health()
        figures.pool_ready(service, timeout=300)
        warm = figures.warm_latency(service, figures.PRINT, 20, 60)
        figures.pool_ready(service, timeout=300)
        load, _ = figures.throughput(service, figures.PRINT, 8, duration, 2.0)
    finally:
        service.stop()
    p50 = warm.p(_P50)
    return [
        Row(f"nsjail factory: warm `/exec` print(1), P50 ({len(warm.values)} runs, "
            f"{warm.misses} misses)", f"{p50 * 1000:.1f} ms", f"bare spawn {spawn50 * 1000:.1f} ms",
            f"{p50 / spawn50:.2f}x"),
        Row(f"nsjail factory: throughput print(1), concurrency 8 ({load.errors} errors)",
            f"{load.rate:.1f}/s", "", ""),
    ]
