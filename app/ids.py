"""Server-made ids: 21 characters of ``[A-Za-z0-9_-]`` from a CSPRNG (nanoid-shaped)."""

from __future__ import annotations

import re
import secrets

__all__ = ["is_valid_id", "new_id"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_SHAPE = re.compile(r"[A-Za-z0-9_-]{21}")


def new_id() -> str:
    """A fresh id with ~126 bits of randomness (64 symbols take 6 bits of each CSPRNG
    byte exactly, so every character is uniform). The first is a letter or digit, so
    an id never reads as an option on a command line (``k8si runtime-sessions end ID``)."""
    first = secrets.choice(_ALPHABET[:62])
    return first + "".join(_ALPHABET[byte & 63] for byte in secrets.token_bytes(20))


def is_valid_id(value: str) -> bool:
    """True when ``value`` has the shape of an id this server makes."""
    return _SHAPE.fullmatch(value) is not None
