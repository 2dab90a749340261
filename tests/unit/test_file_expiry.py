"""FILE_TTL: files unused for longer than the TTL are deleted; used ones are kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from app.storage import FileMeta, FileStore, create_object_store


def test_expiry_deletes_only_unused_files(tmp_path: Path) -> None:
    store = FileStore(create_object_store(None, tmp_path / "objects"))
    source = tmp_path / "data"
    source.write_bytes(b"x")
    old = FileMeta(id="O" * 21, session_id="S" * 21, tenant="t", name="old.txt", size=1,
                   sha256="0" * 64, last_used=time.time() - 7200)
    fresh = FileMeta(id="F" * 21, session_id="S" * 21, tenant="t", name="new.txt", size=1,
                     sha256="0" * 64)

    async def scenario() -> list[str]:
        await store.put(old, source)
        await store.put(fresh, source)
        touched = await store.touch(old, min_interval=3600)  # a use refreshes the clock
        assert touched.last_used > old.last_used
        await store.update_meta(old)  # back to unused for two hours
        assert [m.id for m in await store.expire(3600)] == ["O" * 21]
        return [m.id for m in await store.list_session("t", "S" * 21)]

    assert asyncio.run(scenario()) == ["F" * 21]
    assert not (tmp_path / "objects" / "t" / ("S" * 21) / ("O" * 21)).exists()
