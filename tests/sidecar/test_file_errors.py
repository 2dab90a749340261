"""A write into the work dir that fails is answered, never dropped: 507 when there is
no room (the work dir's size, its inodes, a file size limit), 409 for a name taken by
something else, 500 otherwise; always ``{"error", "message"}`` JSON, no partial file
left, and the connection carries the next request.

The real executor runs with a work dir of a given size: a tmpfs mounted in a mount
namespace of its own (``unshare -m``, root only), or under an ``RLIMIT_FSIZE``.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import files
from sidecar.files import FileError

from .raw_http import Answer, Executor, RawClient, running_executor

KIB = 1024


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(),
                                 reason="a tmpfs of its own needs unshare -m (root)")


def _tmpfs(options: str, then: str = "") -> list[str]:
    """Run the executor with a tmpfs of ``options`` as its work dir (``$0``)."""
    return ["unshare", "-m", "sh", "-c",
            f'mount -t tmpfs -o {options} tmpfs "$0" && {then} exec "$@"']


def _put(client: RawClient, name: str, size: int) -> Answer:
    """A PUT sent whole before its answer is read (as the API's transport does)."""
    client.send(f"PUT /files/{name} HTTP/1.1\r\nContent-Length: {size}\r\n\r\n".encode()
                + b"x" * size)
    return client.answer()


def _names(client: RawClient) -> list[str]:
    """The work dir's files as the executor lists them (its tmpfs is in its own mount
    namespace), on the same connection."""
    client.send(b"GET /files HTTP/1.1\r\n\r\n")
    answer = client.answer()
    assert answer.status == 200 and not answer.closes, answer
    return sorted(entry["name"] for entry in answer.body["files"])


def _refused(answer: Answer, status: int, error: str) -> None:
    assert (answer.status, answer.body["error"]) == (status, error), answer
    assert set(answer.body) == {"error", "message"} and not answer.closes, answer


@pytest.fixture
def small_workdir(tmp_path: Path) -> Iterator[Executor]:
    """A work dir of 1 MiB and 4 inodes (itself and three entries)."""
    work = tmp_path / "work"
    work.mkdir()
    with running_executor(tmp_path, wrap=[*_tmpfs("size=1m,nr_inodes=4"), str(work)]) as ex:
        yield ex


@needs_mount
def test_no_space_left_is_a_507_and_leaves_no_partial_file(small_workdir: Executor) -> None:
    client = small_workdir.connect()
    assert _put(client, "half.bin", 512 * KIB).status == 201  # fits
    answer = _put(client, "big.bin", 2048 * KIB)  # does not
    _refused(answer, 507, "insufficient_storage")
    assert "big.bin" in answer.body["message"] and "No space left" in answer.body["message"]
    assert _names(client) == ["half.bin"], "the partial file is removed"
    assert _put(client, "more.bin", 256 * KIB).status == 201  # the same connection goes on
    assert _names(client) == ["half.bin", "more.bin"]


@needs_mount
def test_no_inode_left_is_a_507(small_workdir: Executor) -> None:
    client = small_workdir.connect()
    for name in ("a", "b", "c"):  # the last inodes
        assert _put(client, name, 1).status == 201, name
    _refused(_put(client, "d", 1), 507, "insufficient_storage")  # a file
    _refused(_put(client, "sub/d", 1), 507, "insufficient_storage")  # a directory
    assert _names(client) == ["a", "b", "c"]
    client.send(b"DELETE /files/c HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert client.answer().status == 200
    assert _put(client, "d", 1).status == 201


@needs_mount
def test_a_read_only_work_dir_is_a_500(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    wrap = _tmpfs("size=1m", 'echo x > "$0/present" && mount -o remount,ro "$0" &&')
    with running_executor(tmp_path, wrap=[*wrap, str(work)]) as executor:
        client = executor.connect()
        answer = _put(client, "new.txt", 10)
        _refused(answer, 500, "internal_server_error")
        assert "Read-only file system" in answer.body["message"]
        client.send(b"DELETE /files/present HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        _refused(client.answer(), 500, "internal_server_error")
        client.send(b"GET /files/present HTTP/1.1\r\n\r\n")
        assert client.answer().body == b"x\n"


def test_a_file_size_limit_is_a_507_on_both_sides(tmp_path: Path) -> None:
    with running_executor(tmp_path, limit_file_size=256 * KIB) as executor:
        client = executor.connect()
        assert _put(client, "at-limit.bin", 256 * KIB).status == 201
        _refused(_put(client, "over.bin", 256 * KIB + 1), 507, "insufficient_storage")
        assert _names(client) == ["at-limit.bin"]
        assert _put(client, "small.bin", 1).status == 201


def test_a_name_taken_by_a_directory_or_a_file_is_a_409(tmp_path: Path) -> None:
    with running_executor(tmp_path) as executor:
        (executor.work / "dir").mkdir()
        (executor.work / "file").write_text("f")
        client = executor.connect()
        _refused(_put(client, "dir", 100), 409, "conflict")
        _refused(_put(client, "file/inner", 100), 409, "conflict")
        client.send(b"DELETE /files/dir HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        _refused(client.answer(), 409, "conflict")
        assert _put(client, "dir/inner", 100).status == 201  # into it is fine
        assert _names(client) == ["dir/inner", "file"]


@pytest.mark.parametrize(("code", "status"), [
    (errno.ENOSPC, 507), (errno.EDQUOT, 507), (errno.EFBIG, 507),
    (errno.EEXIST, 409), (errno.EISDIR, 409), (errno.ENOTDIR, 409), (errno.ENOTEMPTY, 409),
    (errno.ELOOP, 409), (errno.EIO, 500), (errno.EROFS, 500), (errno.EACCES, 500),
])
def test_each_os_error_has_its_status(code: int, status: int) -> None:
    refusal = files._refusal(OSError(code, "the reason"), "a/b.txt")
    assert isinstance(refusal, FileError) and refusal.status == status
    assert "'a/b.txt'" in str(refusal) and "the reason" in str(refusal)


def test_a_failed_write_removes_its_partial_file_only(tmp_path: Path) -> None:
    """The partial file is removed only while its name is still that file: one put in
    its place meanwhile (a racing upload) stays."""
    workdir = files.WorkDir(str(tmp_path), max_file_bytes=10)

    def replaced_then_failing() -> Iterator[bytes]:
        yield b"12345"
        (tmp_path / "x.txt").unlink()
        (tmp_path / "x.txt").write_text("the other upload")
        raise OSError(errno.ECONNRESET, "the client went")

    with pytest.raises(ConnectionResetError):  # the source's own error, as it is
        workdir.write("x.txt", replaced_then_failing())
    assert (tmp_path / "x.txt").read_text() == "the other upload"
    with pytest.raises(FileError) as refused:
        workdir.write("y.txt", iter([b"12345", b"678901"]))
    assert refused.value.status == 413 and not (tmp_path / "y.txt").exists()
