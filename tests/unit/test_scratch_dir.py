"""The scratch directory (``app/paths.py``): in memory where it can be, always private."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from app.paths import ScratchDirError, scratch_dir


def _shm_is_tmpfs() -> bool:
    with open("/proc/self/mounts") as mounts:
        types = [line.split()[2] for line in mounts if line.split()[1] == "/dev/shm"]
    return bool(types) and types[-1] == "tmpfs" and os.access("/dev/shm", os.W_OK)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_is_private_per_data_dir_and_in_memory_when_it_can_be(tmp_path: Path) -> None:
    first = scratch_dir(tmp_path / "a")
    try:
        assert first == scratch_dir(tmp_path / "a")  # the same data dir: the same place
        second = scratch_dir(tmp_path / "b")
        assert second != first
        second.rmdir()
        assert _mode(first) == 0o700 and os.lstat(first).st_uid == os.geteuid()
        expected = Path("/dev/shm") if _shm_is_tmpfs() else Path(tempfile.gettempdir())
        assert first.parent == expected
        assert len(str(first / "0123456789abcdef.sock")) < 108  # a unix socket fits
    finally:
        first.rmdir()


def test_configured_path_is_used_as_it_is(tmp_path: Path) -> None:
    configured = tmp_path / "deep" / "scratch"
    assert scratch_dir(tmp_path / "data", configured) == configured
    assert _mode(configured) == 0o700


def test_an_existing_directory_of_ours_is_made_private(tmp_path: Path) -> None:
    configured = tmp_path / "scratch"
    configured.mkdir(mode=0o755)
    configured.chmod(0o755)
    scratch_dir(tmp_path / "data", configured)
    assert _mode(configured) == 0o700


def test_a_symlink_in_its_place_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    planted = tmp_path / "scratch"
    planted.symlink_to(target)
    with pytest.raises(ScratchDirError, match="not a directory"):
        scratch_dir(tmp_path / "data", planted)
    assert _mode(target) == 0o755


def test_a_file_in_its_place_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "scratch"
    planted.write_text("")
    with pytest.raises(ScratchDirError, match="not a directory"):
        scratch_dir(tmp_path / "data", planted)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "scratch"
    planted.mkdir()
    planted.chmod(0o777)
    os.chown(planted, 12345, 12345)
    with pytest.raises(ScratchDirError, match="belongs to uid 12345"):
        scratch_dir(tmp_path / "data", planted)
    assert _mode(planted) == 0o777  # not taken over
