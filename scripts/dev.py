#!/usr/bin/env python3
"""One-command set-up for a fresh machine: ``serve``, ``test`` or ``lint``.

Needs only Python 3.11+ (standard library). It creates ``.venv`` in the repository
(bootstrapping pip from PyPI when the system Python has no ``ensurepip``, as on
Debian without ``python3-venv``), installs the project into it when
``pyproject.toml`` changed, then runs:

    python3 scripts/dev.py serve [k8si serve options]   # the service, embedded defaults
    python3 scripts/dev.py test [pytest options]        # the whole test suite
    python3 scripts/dev.py lint                         # ruff, mypy, import contracts
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
PYTHON = VENV / "bin" / "python"
EXTRAS = {"serve": "", "test": "[test]", "lint": "[dev]"}


def _bootstrap_pip() -> None:
    """Install pip into the venv from its wheel on PyPI (no ensurepip needed)."""
    with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as response:
        release = json.load(response)
    wheel = next(f for f in release["urls"] if f["packagetype"] == "bdist_wheel")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        with urllib.request.urlopen(wheel["url"], timeout=120) as response:  # noqa: S310
            data = response.read()
        if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
            raise SystemExit("dev.py: the pip wheel from PyPI failed its checksum")
        path.write_bytes(data)
        subprocess.run([str(PYTHON), f"{path}/pip", "install", "--quiet", str(path)], check=True)


def ensure_venv(command: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - any python3 may run this script
        raise SystemExit("dev.py: Python 3.11 or newer is required")
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        try:
            venv.create(VENV, with_pip=True)
        except (subprocess.CalledProcessError, SystemExit):  # Debian: no ensurepip
            venv.create(VENV, with_pip=False, clear=True)
            _bootstrap_pip()
    extra = EXTRAS[command]
    stamp = VENV / f".installed{extra or '[base]'}"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"dev.py: installing the project{extra} into {VENV}", file=sys.stderr)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-e", f"{REPO}{extra}"], check=True)
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv(command)
    os.chdir(REPO)
    if command == "serve":
        argv_ = [str(VENV / "bin" / "k8si"), "serve", *rest]
    elif command == "test":
        argv_ = [str(PYTHON), "-m", "pytest", *rest]
    else:
        # ruff, mypy (strict), then the import contracts (pyproject.toml): all must pass.
        for tool in (["-m", "ruff", "check", "."], ["-m", "mypy"],
                     ["-c", "from importlinter.cli import lint_imports_command as c; c()"]):
            code = subprocess.run([str(PYTHON), *tool], check=False).returncode
            if code:
                return code
        return 0
    os.execv(argv_[0], argv_)  # noqa: S606 - replaces this process, no shell involved


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
