"""Pre-faulting: copy the pages a request will write before the request comes.

In a zygote sandbox the executor and the warm worker are forks of one big
interpreter, so their memory is shared copy-on-write with it: the first write to a
page during a request costs a page fault and a 4 KiB copy. A warm ``print(1)`` writes
a few hundred such pages (Python's reference counts and allocator), about a
millisecond of its latency. A calibration sandbox records which pages each of its
two processes wrote while serving one execution (``own_pages`` before and after,
``as_ranges``); every later sandbox copies those pages right after it is forked
(``populate``, ``MADV_POPULATE_WRITE``: the kernel breaks the sharing without
touching the data), before it is claimed. Linux only, best effort: an old kernel or
a page that is not mapped any more costs nothing but the call.

Standard library only (it runs in the executor and in the warm worker).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["MAX_PAGES", "PAGE", "WORKER_PAGES_FILE", "as_ranges", "own_pages", "parse_ranges",
           "populate"]

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: At most this many pages (16 MiB of 4 KiB pages) are copied ahead per process.
MAX_PAGES = 4096
#: Where a calibration sandbox's warm worker leaves its pages, beside the program.
WORKER_PAGES_FILE = ".worker-pages.json"
_MADV_POPULATE_WRITE = 23
_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4
_PRESENT, _EXCLUSIVE = 1 << 63, 1 << 56
_LARGEST_PAGE_NUMBER = 1 << 52


def _writable_private_regions() -> list[tuple[int, int]]:
    """The process's private writable mappings, as (first page, end page)."""
    regions = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if fields[1] == "rw-p":
                low, high = (int(bound, 16) // PAGE for bound in fields[0].split("-"))
                regions.append((low, high))
    return regions


def own_pages() -> set[int]:
    """The pages (numbers) of private writable memory that only this process maps:
    after a fork, the ones it has written (or allocated) since.

    A non-dumpable process (the executor) cannot open its own ``pagemap``: it is
    dumpable for the moment of the open. Only calibration sandboxes call this, and
    they run no user code.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    dumpable = prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
    if dumpable == 0:
        prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)  # noqa: SIM115
    finally:
        if dumpable == 0:
            prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    pages: set[int] = set()
    with pagemap:
        for low, high in _writable_private_regions():
            pagemap.seek(low * 8)
            entries = memoryview(pagemap.read((high - low) * 8)).cast("Q")
            pages.update(low + index for index, entry in enumerate(entries)
                         if entry & _PRESENT and entry & _EXCLUSIVE)
    return pages


def as_ranges(pages: set[int], limit: int = MAX_PAGES) -> list[list[int]]:
    """Page numbers as sorted ``[first, count]`` runs, at most ``limit`` pages in all."""
    runs: list[list[int]] = []
    for page in sorted(pages)[:limit]:
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1][1] += 1
        else:
            runs.append([page, 1])
    return runs


def parse_ranges(data: Any, limit: int = MAX_PAGES) -> list[list[int]]:
    """``[first, count]`` runs as received; ``ValueError`` unless well-formed and at
    most ``limit`` pages in all."""
    if not isinstance(data, list):
        raise ValueError("page ranges must be a list of [first, count] pairs")
    total, runs = 0, []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2
                and all(type(value) is int for value in item)):
            raise ValueError("page ranges must be a list of [first, count] pairs")
        first, count = item
        if not (0 < first < _LARGEST_PAGE_NUMBER and 0 < count <= limit):
            raise ValueError(f"page range {item} is out of bounds")
        total += count
        if total > limit:
            raise ValueError(f"more than {limit} pages")
        runs.append([first, count])
    return runs


def populate(ranges: list[list[int]]) -> int:
    """Copy these pages into this process now; returns how many were.

    One ``madvise`` per run, nothing else (no look at the mappings: that would cost
    more than the copies). A run that is not private writable memory here, or a
    kernel without the advice (Linux < 5.14), fails alone. Never raises: this is
    only ever a speed-up.
    """
    if not ranges:
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    done = 0
    for first, count in ranges:
        if madvise(first * PAGE, count * PAGE, _MADV_POPULATE_WRITE) == 0:
            done += count
    return done
