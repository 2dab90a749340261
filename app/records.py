"""Records kept as JSON (in Valkey, or beside a file in the object store): ``JsonRecord``.

A record reads back what it knows and ignores keys it does not (written by a newer
release, or a field since removed), so replicas of two releases share their records.
"""

from __future__ import annotations

from typing import Any, Self, cast

import attrs
import orjson
from attrs import AttrsInstance

__all__ = ["JsonRecord"]


class JsonRecord:
    """A base of attrs record classes: ``to_json`` and ``from_json``."""

    __slots__ = ()

    def to_json(self) -> bytes:
        return orjson.dumps(attrs.asdict(cast("AttrsInstance", self)))

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        fields: dict[str, Any] = orjson.loads(data)
        known = {a.name for a in attrs.fields(cast("type[AttrsInstance]", cls))}
        return cls(**{k: v for k, v in fields.items() if k in known})
