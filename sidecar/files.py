"""Defensive access to the work dir: list, read and write regular files only.

Everything is opened relative to a directory fd with ``O_NOFOLLOW``; symlinks,
FIFOs, sockets and devices are skipped and never followed or opened for reading
(a FIFO would block the executor), sizes are judged by ``fstat`` (a sparse file
counts at its apparent size), and listing is capped in count and depth. A directory
past the depth cap is listed once, as an entry with ``skipped`` set (its name ends
in ``/``), so the caller can report it instead of losing it silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["MAX_DEPTH", "FileEntry", "FileError", "WorkDir", "validate_name"]

#: Path segments a work-dir file may have (``a/b/c/file`` is 4).
MAX_DEPTH = 4

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F,
                          0x061C)}
#: Format characters that names in some scripts and emoji need (ZWNJ, ZWJ).
_JOINERS = {"\u200c", "\u200d"}


def _control(ch: str) -> bool:
    """A control character (C0, DEL, C1), a line or paragraph separator, or an invisible
    format character (zero-width space, soft hyphen, BOM; the joiners excepted)."""
    category = unicodedata.category(ch)
    return category in ("Cc", "Zl", "Zp") or (
        category == "Cf" and ch not in _JOINERS and ch not in _BIDI)  # bidi: said below


class FileError(Exception):
    """A file request the executor refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FileEntry:
    """One regular file of the work dir, as listed by ``GET /files``."""

    name: str
    size: int
    mtime: float
    sha256: str
    #: Why the entry was not collected (a directory past the depth cap), else None.
    skipped: str | None = None


def validate_name(name: str) -> str:
    """Reject (never repair) a file name that could escape or mislead; see security.md."""
    if not name or name in (".", "..") or name.startswith("-"):
        raise FileError(400, f"invalid file name {name!r}")
    if any(ch in name for ch in "/\\\x00") or any(_control(ch) for ch in name):
        raise FileError(400, "file name contains a separator or control character")
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        raise FileError(400, "file name longer than 255 bytes")
    if _BIDI & set(name) or unicodedata.normalize("NFKC", name) != name:
        raise FileError(400, "file name changes under Unicode normalisation or has bidi controls")
    return name


def _utf8(name: str) -> bool:
    """Whether a name read from the filesystem was valid UTF-8 (no escaped bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class WorkDir:
    """The sandbox's work dir, reached only through a directory fd."""

    def __init__(self, path: str, *, max_files: int = 1000, max_depth: int = MAX_DEPTH,
                 max_file_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = path
        self.max_files = max_files
        self.max_depth = max_depth
        self.max_file_bytes = max_file_bytes

    def list(self) -> list[FileEntry]:
        """Regular files under the work dir (relative names with ``/``), capped."""
        entries: list[FileEntry] = []
        root = os.open(self.path, _OPEN_DIR)
        try:
            for name, fd in self._walk(root, "", 0):
                if isinstance(fd, str):  # past the depth cap, or a name that is not UTF-8
                    entries.append(FileEntry(name, 0, 0.0, "", skipped=fd))
                    continue
                try:
                    info = os.fstat(fd)
                    entries.append(FileEntry(name, info.st_size, info.st_mtime,
                                             _sha256(fd, info.st_size, self.max_file_bytes)))
                finally:
                    os.close(fd)
                if len(entries) >= self.max_files:
                    break
        finally:
            os.close(root)
        return entries

    def _walk(self, dir_fd: int, prefix: str, depth: int) -> Iterator[tuple[str, int | str]]:
        with os.scandir(dir_fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if not _utf8(entry.name):  # no name the API, JSON or a client could carry
                shown = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                yield (prefix + shown + ("/" if entry.is_dir(follow_symlinks=False) else ""),
                       "its name is not valid UTF-8: not collected")
                continue
            # Judge by lstat first, so a FIFO or device is never even opened.
            if entry.is_file(follow_symlinks=False):
                fd = _open_if_regular(entry.name, dir_fd)
                if fd is not None:
                    yield prefix + entry.name, fd
            elif entry.is_dir(follow_symlinks=False) and depth + 1 >= self.max_depth:
                yield (f"{prefix}{entry.name}/",
                       f"deeper than {self.max_depth} levels below /mnt/data")
            elif entry.is_dir(follow_symlinks=False):
                try:
                    sub = os.open(entry.name, _OPEN_DIR, dir_fd=dir_fd)
                except OSError:
                    continue  # replaced by a link or removed since the scan
                try:
                    yield from self._walk(sub, f"{prefix}{entry.name}/", depth + 1)
                finally:
                    os.close(sub)

    def _parent(self, relative: str) -> tuple[int, str]:
        """(an fd of the existing directory holding ``relative``, its last segment): each
        segment checked by the name rules, no link followed; 404 when it is not there."""
        parts = relative.split("/")
        if len(parts) > self.max_depth:
            raise FileError(404, "no such file")
        for part in parts:
            validate_name(part)
        dir_fd = os.open(self.path, _OPEN_DIR)
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _OPEN_DIR, dir_fd=dir_fd)
            except OSError as exc:
                os.close(dir_fd)
                raise FileError(404, "no such file") from exc
            os.close(dir_fd)
            dir_fd = next_fd
        return dir_fd, parts[-1]

    def open_regular(self, relative: str) -> tuple[int, int]:
        """(fd, size) of a regular file; 404 for anything else, links included."""
        dir_fd, name = self._parent(relative)
        try:
            fd = _open_if_regular(name, dir_fd)
        finally:
            os.close(dir_fd)
        if fd is None:
            raise FileError(404, "no such file")
        return fd, os.fstat(fd).st_size

    def remove(self, relative: str) -> None:
        """Remove one file, link, FIFO... (never following it); 404 if absent, 409 for a
        directory (a kept sandbox's restore of read-only inputs, ``DELETE /files``)."""
        dir_fd, name = self._parent(relative)
        try:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise FileError(404, "no such file") from exc
            if stat.S_ISDIR(info.st_mode):
                raise FileError(409, f"{name!r} is a directory")
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError as exc:
                raise FileError(404, "no such file") from exc
        finally:
            os.close(dir_fd)

    def write(self, relative: str, chunks: Iterator[bytes]) -> int:
        """Write a file (subdirectories are created), replacing one without following links."""
        parts = relative.split("/")
        if len(parts) > self.max_depth:
            raise FileError(400, "file path too deep")
        for part in parts:
            validate_name(part)
        dir_fd = os.open(self.path, _OPEN_DIR)
        try:
            for part in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=dir_fd)
                try:
                    next_fd = os.open(part, _OPEN_DIR, dir_fd=dir_fd)
                except OSError as exc:  # a link or a file where a directory should be
                    raise FileError(409, f"{part!r} is not a directory") from exc
                os.close(dir_fd)
                dir_fd = next_fd
            name = parts[-1]
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None:
                if stat.S_ISDIR(info.st_mode):
                    raise FileError(409, f"{name!r} is a directory")
                os.unlink(name, dir_fd=dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        written = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                written += len(chunk)
                if written > self.max_file_bytes:
                    raise FileError(413, "file too large")
                handle.write(chunk)
        return written


def _open_if_regular(name: str, dir_fd: int) -> int | None:
    """An fd for a regular file, or None: links, FIFOs, sockets, devices are skipped."""
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return None
        fd = os.open(name, _OPEN_READ, dir_fd=dir_fd)
    except OSError:
        return None  # vanished, or swapped for a link (ELOOP) since the lstat
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _sha256(fd: int, size: int, limit: int) -> str:
    if size > limit:
        return ""
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    os.lseek(fd, 0, os.SEEK_SET)
    return digest.hexdigest()
