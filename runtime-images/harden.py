#!/usr/bin/env python3
"""Strip privilege from an image's file system: no setuid/setgid bits, no file capabilities.

Run as the last root step of every image build (``python3 harden.py /``). It walks
the tree without crossing into other file systems (``/proc``, ``/sys``, ``/dev``
and mounts are skipped), clears ``S_ISUID``/``S_ISGID`` on regular files, removes
``security.capability`` extended attributes (what ``setcap`` writes), then walks
again and exits 1 if anything privileged is left. Standard library only, so it
runs with whatever ``python3`` the image has.

Usage: ``harden.py [--check] [ROOT]`` (``--check`` only reports).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from collections.abc import Iterator

CAPABILITY_XATTR = "security.capability"
SKIP = ("/proc", "/sys", "/dev")


def _walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``root`` on the same file system (symlinks not followed)."""
    device = os.lstat(root).st_dev
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs
                   if os.path.join(directory, d) not in SKIP
                   and os.lstat(os.path.join(directory, d)).st_dev == device]
        for name in files:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                yield path, info


def _has_capability(path: str) -> bool:
    try:
        return CAPABILITY_XATTR in os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return False
        raise


def findings(root: str) -> list[str]:
    """What is privileged under ``root``: ``setuid``/``setgid``/``capability`` per path."""
    found = []
    for path, info in _walk(root):
        if info.st_mode & stat.S_ISUID:
            found.append(f"setuid {path}")
        if info.st_mode & stat.S_ISGID:
            found.append(f"setgid {path}")
        if _has_capability(path):
            found.append(f"capability {path}")
    return found


def harden(root: str) -> int:
    """Clear every setuid/setgid bit and file capability; the number of files changed."""
    changed = 0
    for path, info in _walk(root):
        touched = False
        if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
            touched = True
        if _has_capability(path):
            os.removexattr(path, CAPABILITY_XATTR, follow_symlinks=False)
            touched = True
        changed += touched
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="/")
    parser.add_argument("--check", action="store_true", help="only report, change nothing")
    args = parser.parse_args(argv)
    if not args.check:
        print(f"harden: {harden(args.root)} files lost setuid/setgid/capabilities")
    left = findings(args.root)
    for line in left:
        print(f"harden: still privileged: {line}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
