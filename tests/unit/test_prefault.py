"""Pre-faulting (``sidecar/prefault.py``): the page lists, and the kernel doing it.

The kernel parts run in a forked child of a process that filled a buffer first, as
in a zygote sandbox: the child shares the buffer copy-on-write until it writes (or
pre-faults) a page.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from sidecar import prefault

_PAGES = 64


def _in_a_fork(check: Callable[[list[int]], dict[str, Any]]) -> dict[str, Any]:
    """Fill a 64-page buffer, fork, run ``check(buffer's page numbers)`` in the child."""
    buffer = mmap.mmap(-1, _PAGES * prefault.PAGE,  # private: copy-on-write after the fork
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(_PAGES):
        buffer[page * prefault.PAGE:(page + 1) * prefault.PAGE] = bytes([page]) * prefault.PAGE
    first = ctypes.addressof(ctypes.c_char.from_buffer(buffer)) // prefault.PAGE
    pages = list(range(first, first + _PAGES))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            outcome = check(pages)
            outcome["content_kept"] = all(
                buffer[page * prefault.PAGE:(page + 1) * prefault.PAGE]
                == bytes([page]) * prefault.PAGE
                for page in range(outcome.pop("mapped", _PAGES)))
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def test_runs_of_pages_merge_and_stop_at_the_limit() -> None:
    assert prefault.as_ranges({7, 3, 4, 5, 10}) == [[3, 3], [7, 1], [10, 1]]
    assert prefault.as_ranges(set(range(100, 110)), limit=4) == [[100, 4]]
    assert prefault.as_ranges(set()) == []


@pytest.mark.parametrize("data", [
    None, {"a": 1}, [[1]], [[1, 2, 3]], [["1", 2]], [[1.0, 2]], [[True, 2]], [[0, 1]],
    [[-5, 1]], [[1, 0]], [[1, -1]], [[1 << 52, 1]], [[1, prefault.MAX_PAGES + 1]],
])
def test_malformed_page_ranges_are_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        prefault.parse_ranges(data)


def test_page_ranges_up_to_the_limit_are_taken_and_one_more_is_refused() -> None:
    half = prefault.MAX_PAGES // 2
    at_limit = [[1000, half], [1000 + 2 * half, prefault.MAX_PAGES - half]]
    assert prefault.parse_ranges(at_limit) == at_limit
    with pytest.raises(ValueError, match="more than"):
        prefault.parse_ranges([*at_limit, [10**6, 1]])


def test_a_fork_owns_exactly_the_pages_it_writes() -> None:
    def check(pages: list[int]) -> dict[str, Any]:
        before = prefault.own_pages()
        shared_before = not any(page in before for page in pages)
        view = (ctypes.c_char * prefault.PAGE).from_address(pages[5] * prefault.PAGE)
        view[0] = view[0]  # one write to page 5, same byte
        written = prefault.own_pages() - before
        return {"shared_before": shared_before,
                "written": sorted(page - pages[0] for page in written if page in pages)}

    outcome = _in_a_fork(check)
    assert outcome == {"shared_before": True, "written": [5], "content_kept": True}


def test_populate_copies_the_pages_without_changing_them() -> None:
    def check(pages: list[int]) -> dict[str, Any]:
        done = prefault.populate([[pages[10], 11], [pages[40], 1]])
        owned = prefault.own_pages()
        return {"done": done, "owned": sorted(page - pages[0] for page in pages
                                              if page in owned)}

    outcome = _in_a_fork(check)
    if outcome["done"] == 0:
        pytest.skip("this kernel has no MADV_POPULATE_WRITE (Linux >= 5.14)")
    assert outcome == {"done": 12, "owned": [*range(10, 21), 40], "content_kept": True}


def test_populate_skips_what_is_not_private_writable_memory() -> None:
    def check(pages: list[int]) -> dict[str, Any]:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.munmap(ctypes.c_void_p(pages[60] * prefault.PAGE), 4 * prefault.PAGE)
        with open("/proc/self/maps") as maps:  # the first code mapping: r-xp
            text = next(int(line.split("-")[0], 16) // prefault.PAGE
                        for line in maps if " r-xp " in line)
        return {"unmapped": prefault.populate([[1 << 40, 8]]),  # far from anything mapped
                "code": prefault.populate([[text, 2]]),
                "beyond": prefault.populate([[pages[60], 4]]),  # the unmapped end
                "mixed": prefault.populate([[pages[58], 2], [1 << 40, 1], [pages[30], 1]]),
                "mapped": 60}

    outcome = _in_a_fork(check)
    assert (outcome["unmapped"], outcome["code"], outcome["beyond"]) == (0, 0, 0)
    if outcome["mixed"] == 0:
        pytest.skip("this kernel has no MADV_POPULATE_WRITE (Linux >= 5.14)")
    assert outcome["mixed"] == 3  # a failing run does not stop the others
    assert outcome["content_kept"]


def test_a_non_dumpable_process_reads_its_pages_and_stays_non_dumpable() -> None:
    def check(pages: list[int]) -> dict[str, Any]:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0, as the executor is
        owned = prefault.own_pages()
        return {"read": isinstance(owned, set), "dumpable": prctl(3, 0, 0, 0, 0)}

    assert _in_a_fork(check) == {"read": True, "dumpable": 0, "content_kept": True}
