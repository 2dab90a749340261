"""Per-sandbox cgroups (memory and pids) for the local backend.

Each sandbox gets its own memory and pids cgroup under ``k8si-<instance>/``,
created before the sandbox starts; the sandbox tool is moved into them before it
execs, so everything in the sandbox is counted. The memory cgroup is mounted
read-only into the sandbox so the executor can read its OOM-kill counter.
cgroup v1 (separate memory/pids hierarchies) and v2 (unified) are supported; where
neither is writable (not root), ``CgroupManager.available`` is False and the
executor falls back to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import attrs

__all__ = ["CgroupManager", "SandboxCgroups", "join_cgroups_command"]

_ROOT = Path("/sys/fs/cgroup")


@attrs.frozen
class SandboxCgroups:
    """The cgroup directories of one sandbox."""

    memory: Path
    pids: Path

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys((self.memory / "cgroup.procs", self.pids / "cgroup.procs")))

    def members(self) -> set[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
        return pids


class CgroupManager:
    """Creates, empties and removes the sandboxes' cgroups of one service instance."""

    def __init__(self, instance: str) -> None:
        self.group = f"k8si-{instance}"
        self.version = self._detect()

    @staticmethod
    def _detect() -> int | None:
        if os.geteuid() != 0:
            return None
        if (_ROOT / "memory" / "memory.limit_in_bytes").exists() and (_ROOT / "pids").is_dir():
            return 1
        controllers = _ROOT / "cgroup.controllers"
        if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
            return 2
        return None

    @property
    def available(self) -> bool:
        return self.version is not None

    def _parents(self) -> tuple[Path, Path]:
        if self.version == 1:
            return _ROOT / "memory" / self.group, _ROOT / "pids" / self.group
        return _ROOT / self.group, _ROOT / self.group

    def prepare(self) -> None:
        """Create this instance's parent groups and remove leftovers of a previous run."""
        for parent in dict.fromkeys(self._parents()):
            parent.mkdir(exist_ok=True)
            if self.version == 2:
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
            for child in parent.iterdir():
                if child.is_dir():
                    self._destroy_dir(child)

    def close(self) -> None:
        """Remove this instance's (empty) parent groups when the service stops."""
        if not self.available:
            return
        for parent in dict.fromkeys(self._parents()):
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_dir():
                        self._destroy_dir(child)
                self._destroy_dir(parent)

    def create(self, sandbox_id: str, memory_bytes: int, max_pids: int) -> SandboxCgroups:
        memory_parent, pids_parent = self._parents()
        groups = SandboxCgroups(memory=memory_parent / sandbox_id, pids=pids_parent / sandbox_id)
        try:
            self._make(groups, memory_bytes, max_pids)
        except OSError:
            self.destroy(groups)  # what it made so far (nothing runs in it yet)
            raise
        return groups

    def _make(self, groups: SandboxCgroups, memory_bytes: int, max_pids: int) -> None:
        groups.memory.mkdir()
        if groups.pids != groups.memory:
            groups.pids.mkdir()
        if self.version == 1:
            (groups.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # absent when the kernel has no swap accounting
                (groups.memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (groups.pids / "pids.max").write_text(str(max_pids))
        else:
            (groups.memory / "memory.max").write_text(str(memory_bytes))
            (groups.memory / "memory.swap.max").write_text("0")
            (groups.memory / "pids.max").write_text(str(max_pids))

    def limit_memory(self, groups: SandboxCgroups, memory_bytes: int) -> None:
        """Lower a live sandbox's memory limit (a tenant's own maximum)."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        if self.version == 1:
            with contextlib.suppress(OSError):  # the swap limit must not stay below it
                (groups.memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        (groups.memory / name).write_text(str(memory_bytes))

    def destroy(self, groups: SandboxCgroups) -> None:
        """Kill everything still in the sandbox's groups and remove them."""
        for directory in dict.fromkeys((groups.memory, groups.pids)):
            self._destroy_dir(directory)

    @staticmethod
    def _destroy_dir(directory: Path, attempts: int = 100) -> None:
        procs = directory / "cgroup.procs"
        for _ in range(attempts):
            try:
                members = [int(line) for line in procs.read_text().split()]
            except FileNotFoundError:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)  # EBUSY: killed processes are still exiting
        raise OSError(f"cgroup {directory} could not be removed")


def join_cgroups_command(groups: SandboxCgroups) -> list[str]:
    """A ``sh`` prefix that moves itself into the groups, then execs the rest."""
    moves = " && ".join(f'echo $$ > "{procs}"' for procs in groups.procs_files)
    return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sh"]
