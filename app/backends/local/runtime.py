"""The local backend's Python runtime: a dedicated virtual environment.

``k8si setup`` (and ``k8si serve`` on first start) creates it under the data dir
with the data stack (numpy, pandas, matplotlib, cloudpickle, lz4) and builds
matplotlib's font cache once, so no sandbox pays for it. The sandbox mounts the
venv and its base interpreter read-only at their real paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs

__all__ = ["RUNTIME_PACKAGES", "PythonRuntime", "RuntimeError_", "ensure_runtime", "load_runtime"]

RUNTIME_PACKAGES = ("numpy", "pandas", "matplotlib", "cloudpickle", "lz4")
_MARKER = "k8si-runtime.json"


class RuntimeError_(Exception):
    """The Python runtime is missing or could not be created."""


@attrs.frozen
class PythonRuntime:
    """Where the sandbox's Python lives."""

    venv: Path
    base_prefix: Path
    mpl_cache: Path

    @property
    def bin_dir(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python3"


def load_runtime(runtime_dir: Path) -> PythonRuntime | None:
    """The runtime recorded under ``runtime_dir``, if set-up completed there."""
    marker = runtime_dir / _MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if tuple(data.get("packages", ())) != RUNTIME_PACKAGES:
        return None
    runtime = PythonRuntime(venv=Path(data["venv"]), base_prefix=Path(data["base_prefix"]),
                            mpl_cache=Path(data["mpl_cache"]))
    return runtime if runtime.python.exists() else None


def ensure_runtime(runtime_dir: Path, *, log: bool = True) -> PythonRuntime:
    """Create the runtime if it is not there yet (idempotent; needs PyPI once)."""
    existing = load_runtime(runtime_dir)
    if existing is not None:
        return existing
    venv = runtime_dir / "python"
    mpl_cache = runtime_dir / "mplconfig"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"k8si: creating the sandbox Python runtime in {venv} "
              f"({', '.join(RUNTIME_PACKAGES)}); this happens once", file=sys.stderr, flush=True)
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)])
    python = venv / "bin" / "python3"
    # The venv has no pip of its own: this interpreter's pip installs into it.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--disable-pip-version-check", *RUNTIME_PACKAGES])
    base_prefix = subprocess.run(
        [str(python), "-c", "import sys; print(sys.base_prefix)"],
        check=True, capture_output=True, text=True).stdout.strip()
    mpl_cache.mkdir(exist_ok=True)
    _run([str(python), "-c", "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"],
         env={**os.environ, "MPLCONFIGDIR": str(mpl_cache)})
    (runtime_dir / _MARKER).write_text(json.dumps({
        "packages": list(RUNTIME_PACKAGES), "venv": str(venv), "base_prefix": base_prefix,
        "mpl_cache": str(mpl_cache)}))
    runtime = load_runtime(runtime_dir)
    if runtime is None:
        raise RuntimeError_(f"the runtime in {venv} is incomplete after set-up")
    return runtime


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError_(f"{' '.join(argv[:4])} ... failed:\n{completed.stderr[-4000:]}")
