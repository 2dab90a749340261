"""The storage quota's ledger on a real Valkey and a real local object store: a stored
file is counted once and given back once, whatever races its deletion (two DELETEs, a
DELETE and the ``FILE_TTL`` sweep, a sweep that fails half-way), and what was counted
before the ledger existed is still given back."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import valkey.asyncio as valkey

from app.auth import Principal
from app.domain.files.multipart import FilePart, MultipartForm
from app.domain.files.service import FileService
from app.ids import new_id
from app.sessions import SessionStore
from app.settings import TenantLimits, TenantSettings
from app.storage import FileMeta, FileStore, StorageUnavailable, create_object_store
from app.tenants import QuotaExceeded, TenantQuotas, file_charge


def _quotas(client: valkey.Valkey, storage_bytes: int = 0, files: int = 0) -> TenantQuotas:
    return TenantQuotas(client, TenantSettings(defaults=TenantLimits(
        executions_per_window=0, concurrent_executions=0, storage_bytes=storage_bytes,
        files=files)))


def _service(tmp_path: Path, client: valkey.Valkey, quotas: TenantQuotas,
             store: FileStore | None = None) -> FileService:
    store = store or FileStore(create_object_store(None, tmp_path / "objects"))
    return FileService(store, SessionStore(client, 3600), file_ttl=3600, quotas=quotas)


def _meta(tenant: str, size: int, *, name: str = "a.txt", session_id: str | None = None,
          last_used: float | None = None) -> FileMeta:
    return FileMeta(id=new_id(), session_id=session_id or new_id(), tenant=tenant, name=name,
                    size=size, sha256="0" * 64,
                    last_used=time.time() if last_used is None else last_used)


def _source(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"src-{secrets.token_hex(4)}"
    path.write_bytes(b"x" * size)
    return path


def test_a_charge_is_counted_once_and_given_back_once(client: valkey.Valkey, tenant: str,
                                                      run: Any) -> None:
    quotas = _quotas(client, storage_bytes=1000)

    async def scenario() -> list[Any]:
        first = await quotas.reserve(tenant, "file:s/a", 600)
        again = await quotas.reserve(tenant, "file:s/a", 600)  # already counted
        after_reserves = await quotas.usage(tenant)
        released = await quotas.release(tenant, "file:s/a", 600)
        twice = await quotas.release(tenant, "file:s/a", 600)
        never = await quotas.release(tenant, "file:s/never-stored", 600)
        return [first, again, after_reserves, released, twice, never, await quotas.usage(tenant)]

    first, again, after_reserves, released, twice, never, usage = run(scenario())
    assert (first, again) == (True, False)
    assert after_reserves == (600, 1)
    assert (released, twice, never) == (True, False, False)
    assert usage == (0, 0)


def test_the_quota_on_both_sides_of_its_limit(client: valkey.Valkey, tenant: str,
                                              run: Any) -> None:
    quotas = _quotas(client, storage_bytes=1000, files=2)

    async def scenario() -> None:
        await quotas.reserve(tenant, "file:s/a", 600)
        with pytest.raises(QuotaExceeded):
            await quotas.reserve(tenant, "file:s/b", 401)
        assert await quotas.reserve(tenant, "file:s/c", 400)  # exactly at the limit
        with pytest.raises(QuotaExceeded):
            await quotas.reserve(tenant, "file:s/d", 0)  # a third file
        assert await quotas.usage(tenant) == (1000, 2)

    run(scenario())


def test_usage_counted_before_the_ledger_is_given_back_by_size(
        client: valkey.Valkey, tenant: str, run: Any) -> None:
    quotas = _quotas(client)
    usage_key = f"k8si:quota:usage:{tenant}"

    async def scenario() -> list[Any]:
        await client.hset(usage_key,  # type: ignore[misc]
                          mapping={"bytes": 500, "files": 2})  # an older version's counts
        steps = [await quotas.release(tenant, "file:s/old1", 300),
                 await quotas.usage(tenant),
                 await quotas.release(tenant, "file:s/old2", 300),  # never below zero
                 await quotas.usage(tenant),
                 # zero: from now on only the ledger counts
                 await quotas.release(tenant, "file:s/old1", 300),
                 await quotas.usage(tenant)]
        return steps

    assert run(scenario()) == [True, (200, 1), True, (0, 0), False, (0, 0)]


def test_with_usage_from_before_the_ledger_nothing_is_given_back_twice(
        client: valkey.Valkey, tenant: str, run: Any) -> None:
    """A busy tenant whose usage never reaches zero: a ledger file and an older file,
    each deleted by several requests at once, are each given back once."""
    quotas = _quotas(client)

    async def scenario() -> tuple[int, int]:
        await client.hset(f"k8si:quota:usage:{tenant}",  # type: ignore[misc]
                          mapping={"bytes": 500, "files": 2})  # counted by an older version
        await quotas.reserve(tenant, "file:s/new", 100)  # in the ledger: 600, 3
        await asyncio.gather(*(quotas.release(tenant, "file:s/new", 100) for _ in range(3)),
                             *(quotas.release(tenant, "file:s/old", 200) for _ in range(3)))
        return await quotas.usage(tenant)

    assert run(scenario()) == (300, 1)


def test_two_concurrent_deletes_of_one_file_give_its_bytes_back_once(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    quotas = _quotas(client)
    files = _service(tmp_path, client, quotas)
    principal = Principal(tenant=tenant, credential="c")

    async def scenario() -> tuple[list[Any], tuple[int, int]]:
        kept = await files.store(_meta(tenant, 300, name="kept.txt"), _source(tmp_path, 300))
        doomed = await files.store(_meta(tenant, 1000), _source(tmp_path, 1000))
        outcomes = await asyncio.gather(
            *(files.delete(principal, doomed.session_id, doomed.id) for _ in range(4)),
            return_exceptions=True)
        assert await files.objects.get_meta(tenant, kept.session_id, kept.id) is not None
        return outcomes, await quotas.usage(tenant)

    outcomes, usage = run(scenario())
    assert usage == (300, 1), "the deleted file given back once; the other still counted"
    assert all(o is None or type(o).__name__ == "NotFound" for o in outcomes), outcomes


def test_a_delete_racing_the_sweep_gives_the_bytes_back_once(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    quotas = _quotas(client)
    files = _service(tmp_path, client, quotas)
    principal = Principal(tenant=tenant, credential="c")

    async def give_back(meta: FileMeta) -> None:
        await quotas.release(meta.tenant, file_charge(meta.session_id, meta.id), meta.size)

    async def scenario() -> tuple[int, int]:
        old = await files.store(_meta(tenant, 700, last_used=time.time() - 7200),
                                _source(tmp_path, 700))
        await asyncio.gather(files.objects.expire(3600, give_back),
                             files.delete(principal, old.session_id, old.id),
                             return_exceptions=True)
        await files.objects.expire(3600, give_back)  # a second sweep finds nothing new
        return await quotas.usage(tenant)

    assert run(scenario()) == (0, 0)


class _FailingSecondDelete(FileStore):
    """A store whose second delete fails (an injected fault: the store went away)."""

    deletes = 0

    async def delete(self, meta: FileMeta) -> None:
        self.deletes += 1
        if self.deletes == 2:
            raise StorageUnavailable("injected: object store delete failed")
        await super().delete(meta)


def test_a_sweep_that_fails_half_way_has_given_back_what_it_deleted(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    quotas = _quotas(client)
    store = _FailingSecondDelete(create_object_store(None, tmp_path / "objects"))
    files = _service(tmp_path, client, quotas, store)
    given_back: list[str] = []

    async def give_back(meta: FileMeta) -> None:
        given_back.append(meta.id)
        await quotas.release(meta.tenant, file_charge(meta.session_id, meta.id), meta.size)

    async def scenario() -> tuple[int, int]:
        for _ in range(3):
            await files.store(_meta(tenant, 100, last_used=time.time() - 7200),
                              _source(tmp_path, 100))
        with pytest.raises(StorageUnavailable):
            await store.expire(3600, give_back)
        return await quotas.usage(tenant)

    assert run(scenario()) == (200, 2), "the first file deleted and given back at once"
    assert len(given_back) == 1


class _DeletedWhileListed(FileStore):
    """Deletes one file between the listing and the read of its metadata (a concurrent
    DELETE, placed deterministically)."""

    victim: FileMeta | None = None

    async def _read_meta(self, path: str) -> FileMeta:
        if self.victim is not None and path.endswith(f"{self.victim.id}.json"):
            victim, self.victim = self.victim, None
            await self.delete(victim)
        return await super()._read_meta(path)


def test_a_file_deleted_while_its_session_is_listed_leaves_the_rest_listed(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    store = _DeletedWhileListed(create_object_store(None, tmp_path / "objects"))
    files = _service(tmp_path, client, _quotas(client), store)
    session_id = new_id()

    async def scenario() -> list[str]:
        stored = [await files.store(_meta(tenant, 10, name=f"f{i}.txt", session_id=session_id),
                                    _source(tmp_path, 10)) for i in range(4)]
        store.victim = stored[1]
        return [meta.name for meta in await store.list_session(tenant, session_id)]

    assert sorted(run(scenario())) == ["f0.txt", "f2.txt", "f3.txt"]


def test_recording_a_use_never_brings_a_deleted_file_back(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    files = _service(tmp_path, client, _quotas(client))

    async def scenario() -> tuple[FileMeta | None, FileMeta | None]:
        meta = await files.store(_meta(tenant, 10, last_used=time.time() - 7200),
                                 _source(tmp_path, 10))
        alive = await files.used(meta)  # a use of a live file is recorded
        recorded = await files.objects.get_meta(tenant, meta.session_id, meta.id)
        assert recorded is not None and recorded.last_used == alive.last_used > meta.last_used
        await files.objects.delete(meta)
        await files.used(meta)  # an /exec that read it before the DELETE
        marked = await files.objects.update_meta(meta)  # the deleted-in-sandbox mark
        assert marked is False
        return recorded, await files.objects.get_meta(tenant, meta.session_id, meta.id)

    recorded, after = run(scenario())
    assert recorded is not None and after is None


def test_metadata_written_back_by_a_racing_update_is_removed_again(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    """An update that checked the file before a DELETE and writes after it: its write
    lands on a file with no bytes, and it removes what it wrote (the local store has no
    conditional write). The other order is the deleter's: it removes the metadata once
    more after the bytes."""
    files = _service(tmp_path, client, _quotas(client))

    async def scenario() -> tuple[bool, FileMeta | None, list[str]]:
        meta = await files.store(_meta(tenant, 10), _source(tmp_path, 10))
        path = tmp_path / "objects" / tenant / meta.session_id / meta.id
        await files.objects.delete(meta)
        # The race, as the store sees it: the update's check passed before the DELETE,
        # so its write lands now, on a deleted file.
        path.with_name(path.name + ".json").write_bytes(meta.to_json())
        written = await files.objects.update_meta(attrs.evolve(meta, last_used=time.time()))
        left = sorted(p.name for p in path.parent.iterdir()) if path.parent.exists() else []
        return written, await files.objects.get_meta(tenant, meta.session_id, meta.id), left

    written, after, left = run(scenario())
    assert (written, after, left) == (False, None, [])


def test_a_file_whose_bytes_are_gone_is_removed_and_given_back_once(
        tmp_path: Path, client: valkey.Valkey, tenant: str, run: Any) -> None:
    """Metadata left without bytes (a racing DELETE that failed at its second removal,
    a bucket's lifecycle rule): opening it removes it and gives its charge back, once,
    however many readers meet it at once."""
    quotas = _quotas(client)
    files = _service(tmp_path, client, quotas)

    async def scenario() -> tuple[list[Any], tuple[int, int], FileMeta | None, bytes]:
        kept = await files.store(_meta(tenant, 300, name="kept.txt"), _source(tmp_path, 300))
        lost = await files.store(attrs.evolve(_meta(tenant, 1000),  # stored long ago
                                              last_modified=time.time() - 3600),
                                 _source(tmp_path, 1000))
        (tmp_path / "objects" / tenant / lost.session_id / lost.id).unlink()
        opened = await asyncio.gather(*(files.open(lost) for _ in range(3)))
        chunks = await files.open(kept)
        assert chunks is not None
        data = b"".join([chunk async for chunk in chunks])
        return (opened, await quotas.usage(tenant),
                await files.objects.get_meta(tenant, lost.session_id, lost.id), data)

    opened, usage, after, data = run(scenario())
    assert opened == [None, None, None] and after is None
    assert usage == (300, 1), "the lost file given back once; the other still counted"
    assert data == b"x" * 300


def _form(tmp_path: Path, *names: str) -> MultipartForm:
    form = MultipartForm()
    for name in names:
        path = _source(tmp_path, 100)
        form.files.append(FilePart(field="file", filename=name, content_type="text/plain",
                                   path=path, size=100,
                                   sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    return form


@pytest.mark.parametrize("all_or_nothing", [True, False])
def test_an_upload_with_a_bad_part(tmp_path: Path, client: valkey.Valkey, tenant: str,
                                   run: Any, all_or_nothing: bool) -> None:
    """``POST /upload`` (all or nothing) keeps none of its parts when one fails; the batch
    upload keeps the good ones and reports the bad one."""
    quotas = _quotas(client)
    files = _service(tmp_path, client, quotas)
    principal = Principal(tenant=tenant, credential="c")

    async def scenario() -> tuple[list[bool], list[str], tuple[int, int]]:
        session, results = await files.upload(
            principal, _form(tmp_path, "good.txt", "also-good.txt", "../bad.txt", "late.txt"),
            None, all_or_nothing=all_or_nothing)
        listed = [meta.name for meta in await files.objects.list_session(tenant, session.id)]
        return [r.meta is not None for r in results], sorted(listed), await quotas.usage(tenant)

    outcomes, listed, usage = run(scenario())
    if all_or_nothing:
        assert outcomes == [True, True, False]  # stopped at the bad part
        assert listed == [] and usage == (0, 0)
    else:
        assert outcomes == [True, True, False, True]
        assert listed == ["also-good.txt", "good.txt", "late.txt"] and usage == (300, 3)
