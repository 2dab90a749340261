"""The benchmark's table: printed, and written to ``BENCHMARKS.md`` with the machine.

A ``Row`` is one figure: our value, the same-run baseline it is compared with, the
ratio, the target, and whether it holds (``None`` for figures reported for context
only). ``Notes`` are free-form sections (the profile, the phase breakdown).
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Row", "machine", "render_markdown", "render_text", "write_markdown"]


@dataclass
class Row:
    """One figure of the table."""

    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine() -> dict[str, str]:
    """Cores, CPU model, memory, kernel and Python of this machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {"cores": str(os.cpu_count()), "cpu": model, "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


_HEADER = ("figure", "value", "baseline (same run)", "ratio", "target", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.figure, row.value, row.baseline, row.ratio, row.target, row.verdict)


def render_text(rows: list[Row]) -> str:
    table = [_HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(escape(c) for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[Row], notes: dict[str, str], command: str, *,
                   intro: str = "", facts: dict[str, str] | None = None) -> None:
    info = machine()
    held = sum(1 for r in rows if r.passed)
    judged = sum(1 for r in rows if r.passed is not None)
    parts = [
        "# Benchmarks",
        "",
        "Measured by `nox -s bench` (`python -m bench`) against the targets of "
        "`shared/spec/performance.md`. Every ratio compares with a baseline measured in the "
        "same run; absolute numbers move between runs on this shared machine, ratios much "
        "less. A benchmark is not a test: the test suite never asserts on wall-clock times.",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cores']} cores, {info['cpu']}, {info['memory']}, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- command: `{command}`",
        f"- targets held: {held} of {judged}",
        *(f"- {name}: {value}" for name, value in (facts or {}).items()),
        "",
    ]
    if intro:
        parts += [intro, ""]
    parts += [render_markdown(rows), ""]
    for title, text in notes.items():
        parts += [f"## {title}", "", text.rstrip(), ""]
    path.write_text("\n".join(parts))
