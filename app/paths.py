"""The scratch directory: the service's unix sockets and its sandboxes' directories.

Short paths (``sun_path`` holds 108 bytes, data dirs can be deeper) in memory when the
machine has a tmpfs at ``/dev/shm``: a sandbox's directory, identity files, socket and
executor log are made and removed with every sandbox, and on a journaling disk file
system that was about a tenth of the CPU an execution cost (inode allocation scans
for recently freed inodes, journal updates). ``SCRATCH_DIR`` names another place.
The directory is private (0700) and must be this process's own: a path someone else
made in a world-writable parent (a symlink, another user's directory) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["ScratchDirError", "scratch_dir"]

#: Checked before use: a tmpfs, and the directory made in it private (``_make_private``).
_SHM = Path("/dev/shm")  # noqa: S108


class ScratchDirError(OSError):
    """The scratch directory exists but is not this process's private directory."""


def scratch_dir(data_dir: Path, configured: Path | None = None) -> Path:
    """The private scratch directory of the service that uses ``data_dir`` (created).

    ``configured`` (``SCRATCH_DIR``) is used as it is; else one directory per data dir
    under ``/dev/shm`` (a writable tmpfs) or, failing that, the temporary directory.
    """
    if configured is not None:
        path = configured
    else:
        digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:12]
        parent = _SHM if _is_writable_tmpfs(_SHM) else Path(tempfile.gettempdir())
        path = parent / f"k8si-{digest}"
    _make_private(path)
    return path


def _is_writable_tmpfs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as mounts:
            types = [fields[2] for fields in (line.split() for line in mounts)
                     if len(fields) > 2 and fields[1] == str(path)]
    except OSError:
        return False
    return bool(types) and types[-1] == "tmpfs" and os.access(path, os.W_OK | os.X_OK)


def _make_private(path: Path) -> None:
    """Create ``path`` (0700), or check that the existing one is ours, then make it 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # checked below, like a new one
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ScratchDirError(exc.errno, f"scratch directory {path} is not a directory "
                                         f"(a symlink?): {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise ScratchDirError(f"scratch directory {path} belongs to uid {info.st_uid}, "
                                  f"not to this process (uid {os.geteuid()})")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
