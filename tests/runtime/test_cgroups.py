"""The sandboxes' cgroups on the machine's real cgroup tree: a group whose limits cannot
be written is removed again, never left half-made (memory made, pids not, or both made
without their limits)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from app.backends.local.cgroups import CgroupManager


@pytest.fixture
def cgroups() -> Iterator[CgroupManager]:
    manager = CgroupManager(f"test-{secrets.token_hex(4)}")
    if not manager.available:
        pytest.skip("needs root and the memory and pids controllers")
    manager.prepare()
    yield manager
    manager.close()


@pytest.mark.parametrize(("memory_bytes", "max_pids"), [
    (-5, 64),  # refused by the memory controller: nothing else was made yet
    (64 * 1024 * 1024, -3),  # refused by the pids controller: the memory group is made
])
def test_a_group_whose_limit_is_refused_is_removed(cgroups: CgroupManager, memory_bytes: int,
                                                   max_pids: int) -> None:
    sandbox = secrets.token_hex(8)
    with pytest.raises(OSError):
        cgroups.create(sandbox, memory_bytes, max_pids)
    made = cgroups.create(secrets.token_hex(8), 64 * 1024 * 1024, 64)  # beside it: fine
    for directory in {made.memory.parent, made.pids.parent}:
        assert not (directory / sandbox).exists(), f"{directory / sandbox} was left"
    assert made.memory.is_dir() and made.pids.is_dir()
    cgroups.destroy(made)
    assert not made.memory.exists() and not made.pids.exists()
