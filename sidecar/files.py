"""Defensive access to the work dir: list, read and write regular files only.

Everything is opened relative to a directory fd with ``O_NOFOLLOW``; symlinks,
FIFOs, sockets and devices are skipped and never followed or opened for reading
(a FIFO would block the executor), sizes are judged by ``fstat`` (a sparse file
counts at its apparent size), and listing is capped in count and depth. A directory
past the depth cap is listed once, as an entry with ``skipped`` set (its name ends
in ``/``), so the caller can report it instead of losing it silently.

A listing is bounded whatever the work dir holds:

- in entries: every entry counts toward ``max_files``, the skipped ones too (a name
  that is not UTF-8, a directory past the depth cap), so an answer holds at most
  ``max_files`` entries of at most ``max_depth`` names of 255 bytes each (a byte that
  is not UTF-8 is shown as U+FFFD, three bytes): about 3 KiB of JSON an entry at worst;
- in hashing: a file is hashed once per listing however many hard links it has
  (by ``(st_dev, st_ino)``), only its ``st_size`` bytes at the time of its ``fstat``
  (a file still growing gives a size and a digest that agree), and a listing hashes
  at most ``max_hash_bytes`` bytes in all (by default ``HASH_BUDGET_FACTOR`` times
  ``max_file_bytes``, which the API sets to the work dir's size: four times what an
  honest work dir can hold). Sparse files cost no space but their apparent size in
  hashing; a file that no longer fits in what is left of the budget is listed with
  ``skipped`` set, which the API reports in ``skipped_files``.

A write that fails (no space, a name conflict, a body cut short) leaves no partial
file behind, and the failure is a ``FileError`` with the status to answer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Generator, Iterator
from dataclasses import dataclass

__all__ = ["HASH_BUDGET_FACTOR", "MAX_DEPTH", "FileEntry", "FileError", "WorkDir",
           "validate_name"]

#: Path segments a work-dir file may have (``a/b/c/file`` is 4).
MAX_DEPTH = 4
#: A listing hashes at most this many times ``max_file_bytes`` (unless told otherwise).
HASH_BUDGET_FACTOR = 4

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F,
                          0x061C)}
#: Format characters that names in some scripts and emoji need (ZWNJ, ZWJ).
_JOINERS = {"\u200c", "\u200d"}
#: Errors of a write that mean "no room": the work dir's size, a quota, a file size limit.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: Errors that mean the name is taken by something else (a directory, a racing create).
_CONFLICT = frozenset({errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY,
                       errno.ELOOP})


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


def _refusal(exc: OSError, name: str) -> FileError:
    """The answer to an ``OSError`` met on ``name`` (a relative path, never a host path):
    507 when the work dir (or a limit) has no room left, 409 when the name is taken by
    something else, 500 otherwise."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _NO_SPACE:
        return FileError(507, f"no room for {name!r} in the work dir: {reason}")
    if exc.errno in _CONFLICT:
        return FileError(409, f"{name!r} conflicts with what the work dir holds: {reason}")
    return FileError(500, f"{name!r} could not be written or removed: {reason}")


@dataclass(frozen=True)
class FileEntry:
    """One regular file of the work dir, as listed by ``GET /files``."""

    name: str
    size: int
    mtime: float
    sha256: str
    #: Why the entry was not collected (a directory past the depth cap, a name that is
    #: not UTF-8, the listing's hashing budget spent), else None.
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


class _Hashing:
    """One listing's hashing: each inode once, within a budget of bytes."""

    def __init__(self, max_file_bytes: int, budget: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.budget = budget
        self.left = budget
        self.seen: dict[tuple[int, int], FileEntry] = {}

    def entry(self, name: str, fd: int) -> FileEntry:
        info = os.fstat(fd)
        first = self.seen.get((info.st_dev, info.st_ino))
        if first is not None:  # another link of a file already listed: the same answer
            return FileEntry(name, first.size, first.mtime, first.sha256, first.skipped)
        if info.st_size > self.max_file_bytes:  # not hashed; the API skips it by its size
            entry = FileEntry(name, info.st_size, info.st_mtime, "")
        elif info.st_size > self.left:
            entry = FileEntry(name, info.st_size, info.st_mtime, "", skipped=(
                f"not collected: the work dir holds more than {self.budget} bytes of files "
                "to read (sparse files count at their apparent size)"))
        else:
            size, digest = _sha256(fd, info.st_size)
            self.left -= size
            entry = FileEntry(name, size, info.st_mtime, digest)
        self.seen[(info.st_dev, info.st_ino)] = entry
        return entry


class WorkDir:
    """The sandbox's work dir, reached only through a directory fd."""

    def __init__(self, path: str, *, max_files: int = 1000, max_depth: int = MAX_DEPTH,
                 max_file_bytes: int = 256 * 1024 * 1024,
                 max_hash_bytes: int | None = None) -> None:
        self.path = path
        self.max_files = max_files
        self.max_depth = max_depth
        self.max_file_bytes = max_file_bytes
        self.max_hash_bytes = (HASH_BUDGET_FACTOR * max_file_bytes if max_hash_bytes is None
                               else max_hash_bytes)

    def list(self) -> list[FileEntry]:
        """Regular files under the work dir (relative names with ``/``), capped: at most
        ``max_files`` entries, skipped ones included, and ``max_hash_bytes`` hashed."""
        entries: list[FileEntry] = []
        hashing = _Hashing(self.max_file_bytes, self.max_hash_bytes)
        root = os.open(self.path, _OPEN_DIR)
        try:
            with contextlib.closing(self._walk(root, "", 0)) as walk:
                for name, fd in walk:
                    if isinstance(fd, str):  # past the depth cap, or a name that is not UTF-8
                        entries.append(FileEntry(name, 0, 0.0, "", skipped=fd))
                    else:
                        try:
                            entries.append(hashing.entry(name, fd))
                        finally:
                            os.close(fd)
                    if len(entries) >= self.max_files:
                        break
        finally:
            os.close(root)
        return entries

    def _walk(self, dir_fd: int, prefix: str,
              depth: int) -> Generator[tuple[str, int | str], None, None]:
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

    def _root(self, relative: str) -> int:
        """An fd of the work dir itself (an error opening it is answered, not raised)."""
        try:
            return os.open(self.path, _OPEN_DIR)
        except OSError as exc:
            raise _refusal(exc, relative) from exc

    def _parent(self, relative: str) -> tuple[int, str]:
        """(an fd of the existing directory holding ``relative``, its last segment): each
        segment checked by the name rules, no link followed; 404 when it is not there."""
        parts = relative.split("/")
        if len(parts) > self.max_depth:
            raise FileError(404, "no such file")
        for part in parts:
            validate_name(part)
        dir_fd = self._root(relative)
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
            except OSError as exc:  # a directory since the stat, a read-only mount...
                raise _refusal(exc, relative) from exc
        finally:
            os.close(dir_fd)

    def write(self, relative: str, chunks: Iterator[bytes]) -> int:
        """Write a file (subdirectories are created), replacing one without following
        links; on any failure the partial file is removed (``FileError``: 400, 409, 413,
        507, 500; an error of ``chunks`` itself propagates as it is)."""
        parts = relative.split("/")
        if len(parts) > self.max_depth:
            raise FileError(400, "file path too deep")
        for part in parts:
            validate_name(part)
        dir_fd = self._root(relative)
        try:
            for part in parts[:-1]:
                next_fd = _subdir(part, dir_fd, relative)
                os.close(dir_fd)
                dir_fd = next_fd
            fd = _create(parts[-1], dir_fd, relative)
            try:
                written = self._fill(fd, chunks, relative)
            except (FileError, OSError) as exc:
                try:
                    _remove_partial(parts[-1], dir_fd, fd)
                except OSError as cleanup:  # answered too, the first error chained
                    raise _refusal(cleanup, relative) from exc
                raise
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)
        return written

    def _fill(self, fd: int, chunks: Iterator[bytes], relative: str) -> int:
        """Write ``chunks`` to ``fd`` (unbuffered: an error is met here, not at close)."""
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > self.max_file_bytes:
                raise FileError(413, "file too large")
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except OSError as exc:
                    raise _refusal(exc, relative) from exc
        return written


def _subdir(part: str, dir_fd: int, relative: str) -> int:
    """An fd of the directory ``part`` of ``dir_fd``, made if missing (never a link)."""
    try:
        os.mkdir(part, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass  # there already: opened below, and refused unless a directory
    except OSError as exc:
        raise _refusal(exc, relative) from exc
    try:
        return os.open(part, _OPEN_DIR, dir_fd=dir_fd)
    except OSError as exc:  # a link or a file where a directory should be
        raise FileError(409, f"{part!r} is not a directory") from exc


def _create(name: str, dir_fd: int, relative: str) -> int:
    """A new, empty file ``name`` in ``dir_fd``, replacing a file or link there."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise _refusal(exc, relative) from exc
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise FileError(409, f"{name!r} is a directory")
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass  # removed meanwhile: created below all the same
        except OSError as exc:
            raise _refusal(exc, relative) from exc
    try:
        return os.open(name, _CREATE, 0o600, dir_fd=dir_fd)
    except OSError as exc:  # EEXIST: created meanwhile; ENOSPC: no inode left
        raise _refusal(exc, relative) from exc


def _remove_partial(name: str, dir_fd: int, fd: int) -> None:
    """Remove the partial file of a failed write (``fd``), if ``name`` is still it."""
    created = os.fstat(fd)
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # removed meanwhile: nothing left to remove
    if (info.st_dev, info.st_ino) == (created.st_dev, created.st_ino):
        with contextlib.suppress(FileNotFoundError):  # removed between the stat and here
            os.unlink(name, dir_fd=dir_fd)


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


def _sha256(fd: int, size: int) -> tuple[int, str]:
    """(bytes hashed, their SHA-256): the first ``size`` bytes of the file, never more
    (a file still growing), fewer only if it shrank meanwhile."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, _CHUNK), offset)
        if not chunk:
            break  # it shrank since its fstat: the size reported is what was hashed
        digest.update(chunk)
        offset += len(chunk)
    return offset, digest.hexdigest()
