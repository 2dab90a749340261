"""ARCHITECTURE.md is the map: every file or directory it names must exist.

Paths with a slash are read from the repository root; a bare file name (the tables of
one package, e.g. the Kubernetes backend's ``claims.py``) must exist somewhere in it.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_NAMED = re.compile(r"`([A-Za-z0-9_.\-/]+(?:\.(?:py|md|toml|yaml|mjs|sh)|/))`")
_ROOTS = ("app/", "sidecar/", "tests/", "bench/", "scripts/", "manifests/", "kustomize/",
          "runtime-images/", ".ci/")


def _named() -> set[str]:
    return set(_NAMED.findall((REPO / "ARCHITECTURE.md").read_text()))


def test_the_map_names_real_places() -> None:
    missing = []
    for name in sorted(_named()):
        if "/" in name.rstrip("/"):
            if name.startswith(_ROOTS) and not (REPO / name).exists():
                missing.append(name)
        elif not any(path for path in REPO.rglob(name.rstrip("/"))
                     if ".venv" not in path.parts and ".k8si-test" not in path.parts):
            missing.append(name)
    assert not missing, f"ARCHITECTURE.md names what does not exist: {missing}"


def test_the_map_check_would_catch_a_moved_module() -> None:
    """The other side: the check sees the names the map uses."""
    named = _named()
    assert "app/backends/local/backend.py" in named
    assert "sidecar/zygote/server.py" in named
