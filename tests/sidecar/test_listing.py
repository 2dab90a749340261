"""The work dir's listing is bounded whatever the code left in it: ``max_files`` entries,
the skipped ones included; each file hashed once per listing however many links it
has; at most ``max_hash_bytes`` hashed in all (sparse files cost their apparent size),
the rest listed as skipped; and a size and digest that agree for a file still growing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from sidecar import files
from sidecar.files import HASH_BUDGET_FACTOR, WorkDir
from sidecar.protocol import wire_json

from .raw_http import running_executor

MIB = 1024 * 1024
BUDGET_REASON = "sparse files count at their apparent size"


def _not_utf8(directory: Path, count: int, start: int = 0) -> None:
    """``count`` files whose 255-byte names are not UTF-8."""
    for i in range(start, start + count):
        path = os.fsencode(directory) + b"/" + b"%05d" % i + b"\xff" * 250
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("skipped", "listed"), [(9, 9), (10, 10), (11, 10), (500, 10)])
def test_skipped_entries_count_toward_the_cap(tmp_path: Path, skipped: int,
                                              listed: int) -> None:
    _not_utf8(tmp_path, skipped)
    entries = WorkDir(str(tmp_path), max_files=10).list()
    assert len(entries) == listed and all(entry.skipped for entry in entries)


def test_a_mix_of_entries_stops_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "1" / "2" / "3" / "4").mkdir(parents=True)  # past the depth cap: one entry
    _not_utf8(tmp_path, 20)
    (tmp_path / "z.txt").write_text("z")
    entries = WorkDir(str(tmp_path), max_files=10).list()
    assert [entry.name for entry in entries][:2] == ["00000" + "\ufffd" * 250, "00001"
                                                     + "\ufffd" * 250]
    assert len(entries) == 10 and "z.txt" not in [entry.name for entry in entries]
    everything = WorkDir(str(tmp_path), max_files=23).list()
    assert [e.name for e in everything if not e.skipped] == ["a.txt", "z.txt"]
    assert "1/2/3/4/" in [e.name for e in everything if e.skipped]


def test_the_listing_of_many_bad_names_is_bounded(tmp_path: Path) -> None:
    _not_utf8(tmp_path, 1500)
    entries = WorkDir(str(tmp_path)).list()
    assert len(entries) == 1000
    body = wire_json({"files": [entry.__dict__ for entry in entries]})
    assert len(body) < 1000 * 1024, "about 865 bytes of JSON an entry here"


def test_hard_links_are_hashed_once(tmp_path: Path) -> None:
    """21 names of one 1 MiB file cost 1 MiB of the budget: all hashed under 2 MiB."""
    (tmp_path / "f00").write_bytes(b"a" * MIB)
    for i in range(1, 21):
        os.link(tmp_path / "f00", tmp_path / f"f{i:02d}")
    entries = WorkDir(str(tmp_path), max_hash_bytes=2 * MIB).list()
    assert len(entries) == 21
    assert {(entry.size, entry.sha256, entry.skipped) for entry in entries} == {
        (MIB, _digest(b"a" * MIB), None)}


@pytest.mark.parametrize(("budget", "hashed"), [(3 * MIB, 3), (3 * MIB - 1, 2), (MIB, 1),
                                                (MIB - 1, 0)])
def test_the_hashing_budget_on_both_sides(tmp_path: Path, budget: int, hashed: int) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * MIB)
    (tmp_path / "d-empty").write_bytes(b"")  # costs nothing: always hashed
    entries = WorkDir(str(tmp_path), max_hash_bytes=budget).list()
    assert [entry.sha256 != "" for entry in entries] == [True] * hashed + [False] * (
        3 - hashed) + [True]
    for entry in entries[hashed:3]:
        assert entry.skipped and BUDGET_REASON in entry.skipped and entry.size == MIB
    assert entries[3].sha256 == _digest(b"")


def test_a_file_over_the_size_cap_is_not_hashed_and_costs_nothing(tmp_path: Path) -> None:
    (tmp_path / "a-over").write_bytes(b"o" * (MIB + 1))
    (tmp_path / "b-at").write_bytes(b"t" * MIB)
    over, at = WorkDir(str(tmp_path), max_file_bytes=MIB, max_hash_bytes=MIB).list()
    assert (over.size, over.sha256, over.skipped) == (MIB + 1, "", None)  # the API skips it
    assert (at.size, at.sha256, at.skipped) == (MIB, _digest(b"t" * MIB), None)


def test_the_default_budget_is_a_few_times_the_file_cap() -> None:
    assert WorkDir("/", max_file_bytes=MIB).max_hash_bytes == HASH_BUDGET_FACTOR * MIB


def test_sparse_files_and_links_cost_a_bounded_hashing(tmp_path: Path) -> None:
    """999 links of one sparse 64 MiB file, and 1000 sparse 64 MiB files: without the
    bounds, 64 GiB each to hash (over half a minute); with them, one file, then four
    (the count of entries with a digest is the measure, not a clock)."""
    cap = 64 * MIB
    links, separate = tmp_path / "links", tmp_path / "separate"
    links.mkdir()
    separate.mkdir()
    _sparse(links / "f0000", cap)
    for i in range(1, 1000):
        os.link(links / "f0000", links / f"f{i:04d}")
        _sparse(separate / f"f{i:04d}", cap)
    _sparse(separate / "f0000", cap)
    for directory, hashed in ((links, 1000), (separate, HASH_BUDGET_FACTOR)):
        entries = WorkDir(str(directory), max_file_bytes=cap).list()
        assert len(entries) == 1000
        assert sum(1 for entry in entries if entry.sha256) == hashed
        assert all(entry.size == cap for entry in entries)


def test_a_growing_file_is_listed_with_a_size_and_digest_that_agree(tmp_path: Path) -> None:
    """A writer appends while the listing hashes: each listing's (size, sha256) is the
    digest of exactly the first ``size`` bytes (reading to EOF would hash more)."""
    block = 64 * 1024
    content = b"".join(bytes([i % 251]) * block for i in range(400))
    stop = threading.Event()

    def append() -> None:
        with (tmp_path / "growing.bin").open("wb", buffering=0) as handle:
            for offset in range(0, len(content), block):
                if stop.is_set():
                    return
                handle.write(content[offset:offset + block])
                time.sleep(0.001)  # growing for a while, also during each hashing

    (tmp_path / "growing.bin").write_bytes(b"")
    writer = threading.Thread(target=append)
    writer.start()
    try:
        seen: set[int] = set()
        while writer.is_alive() and len(seen) < 50:
            (entry,) = WorkDir(str(tmp_path)).list()
            assert entry.sha256 == _digest(content[:entry.size]), entry.size
            seen.add(entry.size)
    finally:
        stop.set()
        writer.join()
    assert len(seen) >= 2, "listed while it grew"


def test_only_the_size_of_the_fstat_is_hashed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert files._sha256(fd, 4) == (4, _digest(b"0123"))
        assert files._sha256(fd, 10) == (10, _digest(b"0123456789"))
        assert files._sha256(fd, 20) == (10, _digest(b"0123456789"))  # it shrank
    finally:
        os.close(fd)


def test_the_executors_listing_holds_its_bounds(tmp_path: Path) -> None:
    """``GET /files`` of a real executor whose file cap is 1 MiB: a budget of four, five
    sparse files of 1 MiB (one skipped), ten links (free), 1500 names not UTF-8."""
    with running_executor(tmp_path, "--max-upload-bytes", str(MIB)) as executor:
        for i in range(5):
            _sparse(executor.work / f"sparse{i}", MIB)
        for i in range(10):
            os.link(executor.work / "sparse0", executor.work / f"link{i}")
        client = executor.connect()
        client.send(b"GET /files HTTP/1.1\r\n\r\n")
        listed = {entry["name"]: entry for entry in client.answer().body["files"]}
        assert len(listed) == 15
        assert [name for name, entry in listed.items() if "skipped" in entry] == ["sparse4"]
        assert BUDGET_REASON in listed["sparse4"]["skipped"]
        assert {entry["sha256"] for name, entry in listed.items() if name != "sparse4"} == {
            _digest(b"\0" * MIB)}
        _not_utf8(executor.work, 1500)
        client.send(b"GET /files HTTP/1.1\r\n\r\n")
        assert len(client.answer().body["files"]) == 1000
