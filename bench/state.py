"""The Python-state figures: capture and restore time by namespace size.

For each size a session is started with a namespace of about that many bytes (a
pandas DataFrame of random floats and small integers: what an analysis keeps), then
continued ``runs`` times with code that only reads it, so each continuation restores
the namespace in a fresh sandbox and captures it again. The capture and restore
times are the sandbox's own (``state_capture`` and ``state_restore`` phases of
``/metrics``, reported by the executor); the API's part (load, verify, sign, store in
Valkey) is the ``state`` phase. The baseline is the same DataFrame pickled with
cloudpickle and compressed with lz4 once, in a plain process of the same runtime.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .figures import HEADERS, phase_means, pool_ready, scrape
from .load import percentile
from .report import Row, ms
from .service import Process

__all__ = ["SIZES", "StateFigure", "measure", "namespace_code", "rows"]

#: (label, bytes of the namespace's data)
SIZES = (("1 KB", 1024), ("1 MB", 1024 * 1024), ("50 MB", 50 * 1024 * 1024))

_BASELINE = """
import sys, time, cloudpickle, lz4.frame
{setup}
began = time.perf_counter()
blob = lz4.frame.compress(cloudpickle.dumps(df, protocol=5))
dumped = time.perf_counter()
cloudpickle.loads(lz4.frame.decompress(blob))
loaded = time.perf_counter()
print(dumped - began, loaded - dumped)
"""


def namespace_code(size: int) -> str:
    """Python that leaves about ``size`` bytes of data in ``df`` (16 bytes per row)."""
    rows = max(1, size // 16)
    return ("import numpy as np\nimport pandas as pd\nrng = np.random.default_rng(7)\n"
            f"df = pd.DataFrame({{'x': rng.random({rows}), "
            f"'y': rng.integers(0, 1000, {rows})}})\n")


@dataclass
class StateFigure:
    """Capture and restore of one namespace size, through the service."""

    label: str
    runs: int
    blob_bytes: int
    capture: float
    restore: float
    api_state: float
    round_trip_p50: float
    baseline_dump: float
    baseline_load: float
    failures: int


def _baseline(python: Path, size: int) -> tuple[float, float]:
    """Seconds for one cloudpickle+lz4 dump and load of the same data, no sandbox."""
    script = _BASELINE.format(setup=namespace_code(size))
    out = subprocess.run([str(python), "-c", script], check=True, capture_output=True,
                         text=True, cwd=tempfile.gettempdir()).stdout.split()
    return float(out[0]), float(out[1])


def _one(process: Process, python: Path, label: str, size: int, runs: int) -> StateFigure:
    with httpx.Client(base_url=process.base_url, headers=HEADERS, timeout=300) as client:
        pool_ready(process)
        first = client.post("/exec", json={"lang": "py", "code": namespace_code(size)}).json()
        session = first.get("session_id")
        failures = 0 if first.get("status") == "ok" and first.get("has_state") else 1
        before = scrape(process)
        times: list[float] = []
        blob = int(first.get("state_size") or 0)
        for _ in range(runs):
            pool_ready(process)
            began = time.perf_counter()
            body = client.post("/exec", json={"lang": "py", "session_id": session,
                                              "code": "rows = len(df)\n"}).json()
            times.append(time.perf_counter() - began)
            if body.get("status") != "ok" or not body.get("has_state"):
                failures += 1
            blob = int(body.get("state_size") or blob)
        means = phase_means(before, scrape(process))
    dump, load = _baseline(python, size)
    return StateFigure(label=label, runs=runs, blob_bytes=blob,
                       capture=means.get("state_capture", float("nan")),
                       restore=means.get("state_restore", float("nan")),
                       api_state=means.get("state", float("nan")),
                       round_trip_p50=percentile(times, 0.5), baseline_dump=dump,
                       baseline_load=load, failures=failures)


def measure(process: Process, python: Path, quick: bool) -> list[StateFigure]:
    """Every size, ``runs`` continuations each (fewer for the largest)."""
    figures = []
    for label, size in SIZES:
        runs = (3 if quick else 5) if size > 8 * 1024 * 1024 else (5 if quick else 15)
        figures.append(_one(process, python, label, size, runs))
    return figures


def rows(figures: list[StateFigure]) -> list[Row]:
    """Two rows per size: capture, then restore, each against the plain-process baseline."""
    out = []
    for figure in figures:
        blob = figure.blob_bytes
        stored = (f"{blob / 1024 / 1024:.1f} MB" if blob >= 1024 * 1024
                  else f"{blob / 1024:.1f} KB")
        context = (f"blob {stored}, mean of {figure.runs}, {figure.failures} failures; "
                   f"/exec round trip P50 {ms(figure.round_trip_p50)}, API state phase "
                   f"{ms(figure.api_state)}")
        out += [
            Row(f"Python state {figure.label}: capture in the sandbox ({context})",
                ms(figure.capture), f"cloudpickle+lz4 dump {ms(figure.baseline_dump)}",
                f"{figure.capture / figure.baseline_dump:.1f}x"),
            Row(f"Python state {figure.label}: restore in the sandbox",
                ms(figure.restore), f"lz4+cloudpickle load {ms(figure.baseline_load)}",
                f"{figure.restore / figure.baseline_load:.1f}x"),
        ]
    return out
