"""``JsonRecord`` (``app/records.py``): a record round-trips through JSON, and reads
back only the keys it knows (a newer release's extra key is ignored, not an error)."""

from __future__ import annotations

import attrs
import orjson

from app.records import JsonRecord


@attrs.frozen
class _Record(JsonRecord):
    name: str
    sizes: tuple[int, ...] = ()
    seen: float = 0.0


def test_a_record_round_trips() -> None:
    record = _Record("a", (1, 2), 3.5)
    back = _Record.from_json(record.to_json())
    assert (back.name, list(back.sizes), back.seen) == ("a", [1, 2], 3.5)
    assert orjson.loads(record.to_json()) == {"name": "a", "sizes": [1, 2], "seen": 3.5}


def test_keys_it_does_not_know_are_ignored_and_missing_ones_default() -> None:
    back = _Record.from_json(orjson.dumps({"name": "b", "added_later": True}))
    assert back == _Record("b")
