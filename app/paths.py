"""Short paths for unix sockets: ``sun_path`` holds 108 bytes, data dirs can be deeper."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

__all__ = ["socket_dir"]


def socket_dir(data_dir: Path) -> Path:
    """A private (0700) directory with a short path, one per data dir."""
    digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"k8si-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path
