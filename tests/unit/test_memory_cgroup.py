"""The executor's ``--cgroup-dir auto``: which memory cgroup a container's executor reads
its OOM kill counter from (pure path logic; the real kubelet run is
``scripts/kubelet-stretch``)."""

from __future__ import annotations

import os

import pytest

from sidecar.__main__ import memory_cgroup


@pytest.mark.parametrize(("present", "expected"), [
    ({"/sys/fs/cgroup/memory.events"}, "/sys/fs/cgroup"),  # cgroup v2
    ({"/sys/fs/cgroup/memory/memory.oom_control"}, "/sys/fs/cgroup/memory"),  # v1
    (set(), None),  # no memory cgroup visible: OOM kills stay "killed by signal"
])
def test_auto_finds_the_containers_memory_cgroup(monkeypatch: pytest.MonkeyPatch,
                                                 present: set[str],
                                                 expected: str | None) -> None:
    monkeypatch.setattr(os.path, "exists", lambda path: path in present)
    assert memory_cgroup("auto") == expected


def test_an_explicit_directory_or_none_is_kept() -> None:
    assert memory_cgroup("/sys/fs/cgroup/memory/k8si") == "/sys/fs/cgroup/memory/k8si"
    assert memory_cgroup(None) is None
