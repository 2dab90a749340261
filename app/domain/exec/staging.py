"""Moving files between the object store and a sandbox's work dir.

``stage_in`` streams each input into ``/mnt/data`` before the code runs.
``stage_out`` takes the work dir's listing (from the execution's result, else asked
for) and stores what the code created or changed under the execution's session,
*before* the response is sent: an unchanged input is not returned; a changed input
becomes a new file with ``modified_from`` (the original is never overwritten);
a changed *read-only* input is not stored: the original is echoed back as
``inherited``. Files over the count or size caps, with a name the API refuses
(``-rf``, a newline), in a directory past the depth cap, or that cannot be read
back are skipped and reported in ``skipped_files``, never dropped silently and
never failing the run (the executor's own messages are logged, not answered).

An input the code removed from the work dir (absent from the listing, or no longer a
regular file) is reported in ``deleted`` by the name it was placed under, which is
the name the client gave it (in a runtime session's workspace also a file of the
``baseline``, what the workspace held before the run: those unchanged are no outputs);
a removed *read-only* input is echoed back as ``inherited`` like an edited one (the
removal is dropped), unless it is no longer stored (deleted meanwhile, or its bytes
found gone at stage-in: ``stage_in`` leaves such an input out). A listing cut at the
executor's cap (``LISTING_CAP`` files) cannot tell what is gone: nothing is reported.

The code has already run when outputs are stored, so a file that cannot be stored (the
object store, or the quota's Valkey, failing; the sandbox failing to give it back) is
never a 5xx: it is skipped with its reason and counted, and ``delivery_failure``
reports the counts as LibreChat's ``artifact_delivery``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ...errors import ServiceUnavailable
from ...executor import ExecutorClient, ExecutorError
from ...ids import new_id
from ...storage import FileMeta
from ...tenants import QuotaExceeded
from ..files.service import InputFile, OpenFile, guess_type, path_problem

__all__ = ["ArtifactDelivery", "OutputFiles", "SaveFile", "StillStored", "delivery_failure",
           "stage_in", "stage_out"]

#: Stores one output file (counted against the tenant's storage quota).
SaveFile = Callable[[FileMeta, Path], Awaitable[FileMeta]]
#: Whether a stored file still exists (``FileService.still_stored``).
StillStored = Callable[[FileMeta], Awaitable[bool]]

WORKDIR = "/mnt/data"
#: The most files the executor lists (``sidecar/files.py``, ``WorkDir(max_files)``).
LISTING_CAP = 1000

logger = logging.getLogger(__name__)


@attrs.frozen
class OutputFiles:
    """What the execution produced: stored files, and those the caps left out."""

    stored: list[FileMeta]
    skipped: list[dict[str, Any]]
    #: Read-only inputs the code changed or removed: dropped, the original echoed.
    inherited: list[FileMeta] = attrs.field(factory=list)
    #: Inputs (not read-only) the code removed from the work dir, by placed name.
    deleted: list[InputFile] = attrs.field(factory=list)
    #: Output files whose storing was attempted (the caps, names and quota allowed
    #: them), and how many of those failed (the store or the sandbox failing).
    attempted: int = 0
    failed: int = 0


@attrs.frozen
class ArtifactDelivery:
    """LibreChat's ``artifact_delivery``: some outputs of code that ran were not stored."""

    attempted: int
    delivered: int
    failed: int
    #: ``partial`` (some stored) or ``failed`` (none stored).
    status: str
    code: str = "artifact_delivery_failed"


def delivery_failure(outputs: OutputFiles | None) -> ArtifactDelivery | None:
    """The ``artifact_delivery`` of an answer; None when every attempted output was stored."""
    if outputs is None or outputs.failed == 0:
        return None
    delivered = outputs.attempted - outputs.failed
    return ArtifactDelivery(attempted=outputs.attempted, delivered=delivered,
                            failed=outputs.failed,
                            status="partial" if delivered > 0 else "failed")


async def stage_in(executor: ExecutorClient, open_file: OpenFile,
                   inputs: list[InputFile]) -> None:
    """Stream each input into the work dir. One whose bytes are gone (``open_file``
    answers None, having removed what was left of it) is not placed: the file no longer
    exists, and ``stage_out`` reports it in ``deleted`` like one the code removed."""
    for item in inputs:
        chunks = await open_file(item.meta)
        if chunks is not None:
            await executor.put_file(item.path, item.meta.size, chunks)


async def stage_out(executor: ExecutorClient, save: SaveFile, *, tenant: str,
                    session_id: str, user_id: str | None, inputs: list[InputFile],
                    max_files: int, max_file_size: int, tmp_dir: Path,
                    listing: list[dict[str, Any]] | None = None,
                    baseline: Mapping[str, tuple[str, int]] | None = None,
                    still_stored: StillStored | None = None) -> OutputFiles:
    """``listing``: the work dir as the execution's result gave it (else it is asked for);
    ``baseline``: path → (sha256, size) the work dir already held besides ``inputs``;
    ``still_stored``: whether a read-only input missing from the work dir still exists
    (one deleted meanwhile, or whose bytes were found gone at stage-in, is reported in
    ``deleted``, not echoed back)."""
    by_path = {item.path: item.meta for item in inputs}
    baseline = baseline or {}
    stored: list[FileMeta] = []
    inherited: list[FileMeta] = []
    skipped: list[dict[str, Any]] = []
    failed = 0
    entries = listing if listing is not None else await executor.list_files()
    deleted: list[InputFile] = []
    if len(entries) < LISTING_CAP:
        listed = {str(entry["name"]) for entry in entries}
        for item in inputs:
            if item.path in listed:
                continue
            if item.meta.read_only and await _still_stored(still_stored, item.meta):
                inherited.append(item.meta)  # the removal is dropped, like an edit
            else:
                deleted.append(item)
        for path, (sha256, size) in baseline.items():
            if path not in listed and path not in by_path:  # not a session file: not marked
                deleted.append(InputFile(path, FileMeta(id="", session_id="", tenant=tenant,
                                                        name=path, size=size, sha256=sha256)))
    for entry in entries:
        path, size, sha256 = str(entry["name"]), int(entry["size"]), str(entry["sha256"])
        if entry.get("skipped"):  # the executor could not collect it (past the depth cap)
            skipped.append({"name": path, "size": size, "reason": str(entry["skipped"])})
            continue
        problem = path_problem(path)
        if problem is not None:
            skipped.append({"name": path, "size": size,
                            "reason": f"file name not allowed: {problem}"})
            continue
        original = by_path.get(path)
        if original is not None and original.sha256 == sha256 and original.size == size:
            continue  # an input the code did not change
        if original is None and baseline.get(path) == (sha256, size):
            continue  # an earlier file of the workspace the code did not change
        if original is not None and original.read_only:
            inherited.append(original)  # read-only: the edit is dropped
            continue
        if len(stored) >= max_files:
            skipped.append({"name": path, "size": size,
                            "reason": f"more than {max_files} output files"})
            continue
        if size > max_file_size:
            skipped.append({"name": path, "size": size,
                            "reason": f"larger than {max_file_size} bytes"})
            continue
        modified_from = ({"id": original.id, "storage_session_id": original.session_id}
                         if original is not None else None)
        try:
            meta = await _store_one(executor, save, path, tmp_dir=tmp_dir,
                                    max_file_size=max_file_size, meta=FileMeta(
                id=new_id(), session_id=session_id, tenant=tenant, name=path, size=size,
                sha256=sha256, content_type=guess_type(path), user_id=user_id,
                modified_from=modified_from))
        except QuotaExceeded as exc:
            skipped.append({"name": path, "size": size, "reason": exc.message})
            continue
        except ExecutorError as exc:  # the detail is the executor's: logged, not answered
            logger.warning("output file not collected", extra={
                "session_id": session_id, "detail": str(exc)[:500]})
            skipped.append({"name": path, "size": size,
                            "reason": "could not be read from the sandbox"})
            failed += 1
            continue
        except ServiceUnavailable as exc:  # the code ran: reported, never a 5xx
            logger.warning("output file not stored", extra={
                "session_id": session_id, "error": exc.code, "detail": str(exc)[:500]})
            skipped.append({"name": path, "size": size,
                            "reason": "could not be stored: the storage failed"})
            failed += 1
            continue
        if meta is None:
            skipped.append({"name": path, "size": size, "reason": "changed while collected"})
        else:
            stored.append(meta)
    return OutputFiles(stored=stored, skipped=skipped, inherited=inherited, deleted=deleted,
                       attempted=len(stored) + failed, failed=failed)


async def _still_stored(still_stored: StillStored | None, meta: FileMeta) -> bool:
    """Whether a read-only input is still stored; a store failure says yes (the code has
    run: never a 5xx here, and echoing an existing original is the safe side)."""
    if still_stored is None:
        return True
    try:
        return await still_stored(meta)
    except ServiceUnavailable as exc:
        logger.warning("read-only input's metadata not readable", extra={
            "file_id": meta.id, "detail": str(exc)})
        return True


async def _store_one(executor: ExecutorClient, save: SaveFile, path: str, *, tmp_dir: Path,
                     max_file_size: int, meta: FileMeta) -> FileMeta | None:
    """Copy one file out of the sandbox through a temporary file, checking what arrives."""
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="output-")
    tmp_path = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as handle:
            async with executor.open_file(path) as chunks:
                if chunks is None:
                    return None  # replaced by a link or removed since the listing
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_file_size:
                        raise ExecutorError(f"{path!r} grew past the size cap while read")
                    digest.update(chunk)
                    handle.write(chunk)
        meta = attrs.evolve(meta, size=size, sha256=digest.hexdigest())
        return await save(meta, tmp_path)
    finally:
        os.unlink(tmp_path)
