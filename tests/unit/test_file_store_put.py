"""A stored file's bytes never outlive a failed metadata write: nothing would ever find
them (the ``FILE_TTL`` sweep walks metadata), so ``put`` removes them again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.storage import FileMeta, FileStore, StorageUnavailable, create_object_store


def test_bytes_whose_metadata_write_failed_are_removed(tmp_path: Path) -> None:
    store = FileStore(create_object_store(None, tmp_path / "objects"))
    source = tmp_path / "src"
    source.write_bytes(b"x")
    meta = FileMeta(id="F" * 21, session_id="S" * 21, tenant="t", name="a.txt", size=1,
                    sha256="0" * 64)
    session = tmp_path / "objects" / "t" / ("S" * 21)
    # A directory where the metadata object goes: the store takes the bytes, then fails
    # to write the metadata.
    (session / f"{meta.id}.json").mkdir(parents=True)
    with pytest.raises(StorageUnavailable) as failed:
        asyncio.run(store.put(meta, source))
    assert failed.value.message == "object store write failed"
    assert sorted(p.name for p in session.iterdir()) == [f"{meta.id}.json"]  # no bytes
    (session / f"{meta.id}.json").rmdir()
    assert asyncio.run(store.put(meta, source)) == meta  # and a retry stores it whole
    assert sorted(p.name for p in session.iterdir()) == [meta.id, f"{meta.id}.json"]
