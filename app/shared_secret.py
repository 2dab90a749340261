"""The secret every API replica shares and no sandbox ever sees.

``STATE_HMAC_KEY``, else one generated once into ``DATA_DIR/state-key`` (mode 0600);
replicas must share it. It signs state blobs (``app/domain/state/blob.py``) and
continuation tokens (``app/domain/programmatic/tokens.py``), and the Kubernetes
backend derives each sandbox pod's executor token from it (any replica can talk to a
pod another claimed). Each use derives a key of its own from it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["StateKeyError", "load_key"]

_KEY_FILE = "state-key"


class StateKeyError(ValueError):
    """The key file exists but holds no usable key (start-up stops)."""


def load_key(configured: str | None, data_dir: Path) -> bytes:
    """The HMAC key: the configured one, else ``DATA_DIR/state-key`` (created once)."""
    if configured:
        return configured.encode()
    path = data_dir / _KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = None
    if fd is None:  # made by an earlier start: the same key, so stored blobs stay valid
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise StateKeyError(f"{path} holds no usable key; remove it or set STATE_HMAC_KEY")
        return key
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key
