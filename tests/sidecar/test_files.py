"""The executor's work-dir access on a real directory: names, links, FIFOs, caps."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sidecar.files import FileError, WorkDir, validate_name


@pytest.mark.parametrize("name", ["data.csv", "résumé.txt", "a" * 255, "x.tar.gz", ".hidden",
                                  "名前.png",
                                  "\U0001F468\u200d\U0001F469\u200d\U0001F467.png",  # ZWJ
                                  "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645.txt"])  # ZWNJ
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "nul\x00", "tab\tx",
                                  "-rf", "a" * 256, "é" * 128, "evil\u202etxt.exe",
                                  "ﬁle", "\uff21.txt", "bell\x07",
                                  # C1 controls (CSI, NEL), line and paragraph separators, the
                                  # Arabic letter mark (bidi), invisible format characters
                                  "csi\x9b2J", "nel\x85x", "a\u2028b", "a\u2029b",
                                  "x\u061cy.txt", "zero\u200bwidth", "bom\ufeff",
                                  "soft\u00adhyphen", "del\x7f"])
def test_invalid_names_are_rejected_not_repaired(name: str) -> None:
    with pytest.raises(FileError) as info:
        validate_name(name)
    assert info.value.status == 400


def test_listing_skips_links_fifos_and_respects_caps(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bb")
    os.symlink("/etc/passwd", tmp_path / "link")
    os.symlink(tmp_path / "sub", tmp_path / "dirlink")
    os.mkfifo(tmp_path / "fifo")
    os.link(tmp_path / "a.txt", tmp_path / "hard")
    deep = tmp_path / "1" / "2" / "3" / "4" / "5"
    deep.mkdir(parents=True)
    (deep / "too-deep.txt").write_text("x")
    listed = WorkDir(str(tmp_path), max_depth=4).list()
    assert [e.name for e in listed if e.skipped is None] == ["a.txt", "hard", "sub/b.txt"]
    # the directory past the cap is reported once, not dropped silently
    assert [(e.name, e.skipped) for e in listed if e.skipped] == [
        ("1/2/3/4/", "deeper than 4 levels below /mnt/data")]
    entry = next(e for e in WorkDir(str(tmp_path)).list() if e.skipped is None)
    assert entry.size == 1 and len(entry.sha256) == 64
    assert len(WorkDir(str(tmp_path), max_files=2).list()) == 2


def test_reading_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    outcome: list[object] = []

    def attempt() -> None:
        try:
            WorkDir(str(tmp_path)).open_regular("fifo")
        except FileError as exc:
            outcome.append(exc.status)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert outcome == [404]


@pytest.mark.parametrize("relative", ["link", "../outside", "sub/../../x", "/etc/passwd",
                                      "dirlink/b.txt"])
def test_open_refuses_links_and_escapes(tmp_path: Path, relative: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    os.symlink("/etc/passwd", tmp_path / "link")
    os.symlink(tmp_path / "sub", tmp_path / "dirlink")
    with pytest.raises(FileError):
        WorkDir(str(tmp_path)).open_regular(relative)


def test_write_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("original")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(target, work / "upload.txt")
    WorkDir(str(work)).write("upload.txt", iter([b"new"]))
    assert target.read_text() == "original"
    assert (work / "upload.txt").read_bytes() == b"new"
    assert not (work / "upload.txt").is_symlink()


def test_write_size_cap_on_both_sides(tmp_path: Path) -> None:
    workdir = WorkDir(str(tmp_path), max_file_bytes=10)
    assert workdir.write("ok.bin", iter([b"x" * 10])) == 10
    with pytest.raises(FileError) as info:
        workdir.write("big.bin", iter([b"x" * 6, b"x" * 5]))
    assert info.value.status == 413
