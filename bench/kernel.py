"""Where the sandboxes' CPU goes: a system-wide ``perf`` profile, summarized.

Used by ``--profile`` in the same extra concurrency-8 run as the API's py-spy
profile. The sandboxes and the zygote are ``python3`` processes (the API is
``python``); their samples are split into what a single-use sandbox costs the kernel:
page faults (mostly copy-on-write of the pre-imported image), exits (unmapping it),
forks (copying its page tables), pre-faulting, namespaces and mounts. Needs
``perf`` and the right to sample every CPU (root, or ``perf_event_paranoid`` <= 0);
without them the note says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["start", "summary"]

#: Shown category -> the kernel function whose inclusive share it is.
_CATEGORIES = {
    "page faults (copy-on-write, first touch)": "asm_exc_page_fault",
    "process exits (unmapping the image)": "do_exit",
    "forks (copying page tables)": "copy_process",
    "pre-faulting (madvise, sidecar/prefault.py)": "do_madvise",
    "namespaces (unshare)": "__x64_sys_unshare",
    "mounts": "__x64_sys_mount",
}
_LINE = re.compile(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[([k.])\]\s+(\S+)")


def start(seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """``perf record -a -g`` for ``seconds`` into ``out`` (None: no perf here)."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    return subprocess.Popen([perf, "record", "-a", "-g", "-F", "499", "-o", str(out), "--",
                             "sleep", str(int(seconds))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _report(data: Path, *args: str) -> str:
    perf = shutil.which("perf") or "perf"
    return subprocess.run([perf, "report", "-i", str(data), "--stdio", "-g", "none", *args],
                          capture_output=True, text=True, timeout=300, check=False).stdout


def summary(data: Path) -> str:
    """The sandboxes' share of all samples, their kernel share, and the categories."""
    if not data.exists() or data.stat().st_size == 0:
        return "(no perf data: perf missing or not allowed to sample every CPU)"
    comms = {}
    for line in _report(data, "--no-children", "--sort", "comm").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].endswith("%"):
            comms[fields[1]] = float(fields[0].rstrip("%"))
    kernel = 0.0
    for line in _report(data, "--no-children", "--comm", "python3", "--sort", "dso").splitlines():
        if "[kernel.kallsyms]" in line:
            kernel = float(line.split("%")[0])
    inclusive: dict[str, float] = {}
    for line in _report(data, "--children", "--comm", "python3", "--sort", "sym").splitlines():
        match = _LINE.match(line)
        if match and match.group(3) == "k":
            inclusive.setdefault(match.group(4), float(match.group(1)))
    if "python3" not in comms:
        return "(no samples of the sandboxes' processes)"
    lines = [f"- sandboxes and zygote (`python3`): {comms['python3']:.1f}% of all samples, "
             f"API (`python`): {comms.get('python', 0.0):.1f}%",
             f"- of the sandboxes' samples, in the kernel: {kernel:.1f}%"]
    lines += [f"- {name}: {inclusive.get(symbol, 0.0):.1f}% (inclusive, `{symbol}`)"
              for name, symbol in _CATEGORIES.items()]
    return ("`perf record -a -g` at 499 Hz over the extra run; shares of the sandboxes' "
            "samples unless said otherwise.\n\n" + "\n".join(lines))
