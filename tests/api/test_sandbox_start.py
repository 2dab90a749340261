"""A sandbox start that fails, or is cancelled at any moment, leaves nothing behind: no
process of its uid, no cgroup, no directory, no socket; and a failure is the backend's
``SandboxStartError`` (a 503 to the client), found as soon as the sandbox is gone. And a
sandbox started without cgroups still has its process limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

import attrs
import pytest

from app.backends.local import LocalBackend
from app.backends.local.cgroups import CgroupManager, SandboxCgroups
from app.backends.local.sandbox import LocalSandbox, SandboxConfig, SandboxStartError
from app.backends.local.zygote import ZygoteFactory
from tests.conftest import RunningApp
from tests.security.sandbox_checks import wait_until_no_process_of

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _backend(api: RunningApp) -> LocalBackend:
    backend = api.app.state.backend
    assert isinstance(backend, LocalBackend)
    return backend


def _leftovers(backend: LocalBackend, sandbox: LocalSandbox) -> list[str]:
    group = backend.factory.cgroups.group
    cgroups = [*_CGROUP_ROOT.glob(f"*/{group}/{sandbox.id}"),
               *_CGROUP_ROOT.glob(f"{group}/{sandbox.id}")]
    found = [str(path) for path in (sandbox.directory, sandbox.socket_path, *cgroups)
             if path.exists()]
    if sandbox.uid == os.getuid():  # no uid of its own (not root): nothing to tell apart
        return found
    return found + [f"pid {pid}" for pid in wait_until_no_process_of(sandbox.uid)]


def _never_started_zygote(config: SandboxConfig) -> ZygoteFactory:
    """A zygote client whose zygote was never started: every spawn fails."""
    return ZygoteFactory(venv=config.runtime.venv, sidecar_dir=config.sidecar_dir,
                         mpl_cache=config.runtime.mpl_cache, preload=(),
                         log_path=config.root_dir / "unused.log", setpriv=None)


def _sandbox(backend: LocalBackend, *, factory: ZygoteFactory | None = None,
             nsjail: Path | None = None) -> LocalSandbox:
    config = backend.factory.config
    assert config is not None
    if nsjail is not None:
        config = attrs.evolve(config, nsjail=nsjail, ready_timeout=30.0)
    uid = backend.factory._free_uids[-1]  # the last free one: not used meanwhile
    return LocalSandbox(secrets.token_hex(8), "py", config, backend.factory.cgroups, uid,
                        factory=factory)


def test_a_zygote_that_cannot_fork_leaves_nothing(api: RunningApp) -> None:
    backend = _backend(api)
    if not backend.factory.cgroups.available:
        pytest.skip("zygote sandboxes need cgroups")
    config = backend.factory.config
    assert config is not None
    gone = _never_started_zygote(config)
    sandbox = _sandbox(backend, factory=gone)
    with pytest.raises(SandboxStartError, match="could not start"):
        api.run(sandbox.start())
    assert _leftovers(backend, sandbox) == []


def test_a_sandbox_that_dies_at_start_fails_without_waiting_out_the_timeout(
        api: RunningApp) -> None:
    """``/bin/false`` in nsjail's place: the process is gone at once, and so is the wait
    (not the 30 s ready timeout: the error says why)."""
    backend = _backend(api)
    sandbox = _sandbox(backend, nsjail=Path("/bin/false"))
    with pytest.raises(SandboxStartError, match="exited before"):
        api.run(sandbox.start())
    assert _leftovers(backend, sandbox) == []


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.005, 0.02, 0.1])
def test_a_start_cancelled_at_any_moment_leaves_nothing(api: RunningApp, delay: float) -> None:
    backend = _backend(api)
    generations = backend.factory.generations

    async def scenario() -> LocalSandbox:
        generation = await generations.checkout(None) if generations is not None else None
        try:
            sandbox = _sandbox(backend, factory=generation.factory if generation else None)
            task = asyncio.ensure_future(sandbox.start())
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not task.cancelled():
                await sandbox.destroy()  # quicker than the cancel: destroyed the usual way
            return sandbox
        finally:
            if generations is not None and generation is not None:
                generations.sandbox_gone(generation)

    sandbox = api.run(scenario())
    assert _leftovers(backend, sandbox) == []


def test_without_cgroups_a_sandbox_of_its_own_uid_still_has_a_process_limit(
        api: RunningApp) -> None:
    """Where no pids cgroup holds a sandbox (cgroups unavailable), RLIMIT_NPROC does, as
    long as the sandbox's uid is its own (as root): a fork bomb stops at it."""
    backend = _backend(api)
    config = backend.factory.config
    assert config is not None
    no_cgroups = CgroupManager("unavailable")
    no_cgroups.version = None  # as on a machine without writable memory and pids cgroups
    uid = backend.factory._free_uids[-1]
    if uid == os.getuid():
        pytest.skip("sandboxes share the service's uid here (not root)")
    sandbox = LocalSandbox(secrets.token_hex(8), "bash", config, no_cgroups, uid)

    async def scenario() -> str:
        await sandbox.start()
        try:
            result = await sandbox.executor.execute(
                lang="bash", code="ulimit -u", args=[], timeout=10, request_id="nproc",
                transport_timeout=30)
            return result.stdout.strip()
        finally:
            await sandbox.destroy()

    assert api.run(scenario()) == str(config.max_processes)


class _CgroupsThatStick(CgroupManager):
    """Removes a sandbox's cgroups, then reports it could not (an injected fault: a member
    stuck in the kernel)."""

    def destroy(self, groups: SandboxCgroups) -> None:
        super().destroy(groups)
        raise OSError("injected: cgroup could not be removed")


def test_a_sandbox_whose_cgroups_stick_is_still_torn_down_and_its_uid_retired(
        api: RunningApp) -> None:
    backend = _backend(api)
    if not backend.factory.cgroups.available:
        pytest.skip("needs cgroups")
    config = backend.factory.config
    assert config is not None
    sticky = _CgroupsThatStick(backend.factory.cgroups.group.removeprefix("k8si-"))
    uid = backend.factory._free_uids.pop()  # taken, as make() takes one
    if uid == os.getuid():
        backend.factory._free_uids.append(uid)
        pytest.skip("sandboxes share the service's uid here (not root): no uid to retire")
    sandbox = LocalSandbox(secrets.token_hex(8), "bash", config, sticky, uid)

    async def scenario() -> None:
        await sandbox.start()
        await backend.factory.destroy(sandbox)

    with pytest.raises(OSError, match="injected"):
        api.run(scenario())
    assert _leftovers(backend, sandbox) == [], "every other step of the teardown ran"
    assert uid not in backend.factory._free_uids, "its uid is never handed out again"


def test_a_failed_start_whose_teardown_fails_too_is_still_a_start_error(
        api: RunningApp) -> None:
    """The start's own error is the one raised (a 503), not the teardown's; the teardown's
    is logged and the sandbox retired (its uid is never reused)."""
    backend = _backend(api)
    if not backend.factory.cgroups.available:
        pytest.skip("needs cgroups")
    config = backend.factory.config
    assert config is not None
    gone = _never_started_zygote(config)
    sticky = _CgroupsThatStick(backend.factory.cgroups.group.removeprefix("k8si-"))
    sandbox = LocalSandbox(secrets.token_hex(8), "py", config, sticky,
                           backend.factory._free_uids[-1], factory=gone)
    with pytest.raises(SandboxStartError, match="could not start"):
        api.run(sandbox.start())
    assert sandbox.retired
    assert _leftovers(backend, sandbox) == []


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_an_acquire_cancelled_while_its_sandbox_starts_gives_its_slot_back(
        api: RunningApp, delay: float) -> None:
    """No warm bash sandbox: the acquire takes a slot, then starts one, and is cancelled
    (the client left) at that moment; the slot is free again, and nothing is claimed."""
    backend = _backend(api)

    async def scenario() -> tuple[int, int, int]:
        free = backend.free_slots
        acquiring = asyncio.create_task(backend.acquire("bash", "c" * 21, "default"))
        while backend.free_slots == free and not acquiring.done():
            await asyncio.sleep(0.001)
        taken = backend.free_slots
        await asyncio.sleep(delay)
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            lease = await acquiring
            await backend.release(lease)  # it won the race: given back the usual way
        return free, taken, backend.free_slots

    free, taken, after = api.run(scenario())
    assert taken == free - 1, "the slot was taken before the cancellation"
    assert after == free
