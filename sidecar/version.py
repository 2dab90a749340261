"""The toolchain version of this sandbox's language, from the language table's probe.

Run once per executor process, only when asked (``GET /health?version=1``), under
the user's environment: a Kubernetes backend asks a pod once per language.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping

from .languages import Language

__all__ = ["VERSION_PATTERN", "probe_version"]

#: ``1.2.3`` in a probe's output (also read by the local backend's probes).
VERSION_PATTERN = re.compile(r"\d+(?:\.\d+)+")
_cache: dict[str, str | None] = {}


def probe_version(language: Language, env: Mapping[str, str]) -> str | None:
    """``1.2.3`` from the probe's output, or None when the probe fails."""
    if language.code not in _cache:
        try:
            completed = subprocess.run(list(language.version_probe), env={**env, **language.env},
                                       capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            _cache[language.code] = None
        else:
            match = VERSION_PATTERN.search(completed.stdout + completed.stderr)
            _cache[language.code] = match.group(0) if match and completed.returncode == 0 else None
    return _cache[language.code]
