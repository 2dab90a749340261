"""The zygote sandbox factory, API side: start the zygote, ask it for sandboxes.

The zygote itself is execution-side code (``sidecar/zygote``); this module is its
client. A sandbox from the zygote has the same layout, identity,
limits and seccomp policy as one started by nsjail (``nsjail.py``); the mount plan
below is the nsjail command line's mounts as data. What differs is the cost: a
fork of a process that has already imported the executor and the Python libraries
(about a millisecond of CPU and a few of wall time) instead of nsjail, a new
executor interpreter and a new warm interpreter importing numpy, pandas and
matplotlib (about a second of CPU).

Used where it can hold the same guarantees: as root (sandboxes get their own uid,
no user namespace), with per-sandbox cgroups, on x86-64 (the seccomp filter), with
an ``/opt`` directory to place ``/opt/k8si`` in the zygote's own mount namespace.
Elsewhere the backend starts sandboxes with nsjail as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from sidecar.contract import ZYGOTE_BOOT, zygote_filter_supported

from .cgroups import CgroupManager
from .nsjail import PYTHON_MOUNT, SIDECAR_MOUNT, SandboxSpec, mounts

__all__ = ["MPL_SEED", "ZygoteError", "ZygoteFactory", "mount_plan", "unavailable_reason"]

logger = logging.getLogger(__name__)

MPL_SEED = f"{SIDECAR_MOUNT}/mplconfig"


class ZygoteError(Exception):
    """The zygote could not start or could not make a sandbox."""


def unavailable_reason(cgroups: CgroupManager) -> str | None:
    """Why the zygote cannot hold nsjail's guarantees here (None: it can)."""
    if os.geteuid() != 0:
        return "not root (sandboxes need a user namespace: nsjail)"
    if not cgroups.available:
        return "no writable memory and pids cgroups"
    if not zygote_filter_supported():
        return "the seccomp filter is written for x86-64"
    if not os.path.isdir("/opt"):
        return "no /opt directory"
    return None


def mount_plan(*, uid: int, etc_dir: Path, workdir_bytes: int, tmp_bytes: int,
               base_prefix: Path, sidecar_dir: Path, venv: Path, mpl_cache: Path,
               cgroup_memory: Path) -> list[list[Any]]:
    """nsjail's mounts (``nsjail.mounts``, the one definition) for ``sidecar.zygote.jail``."""
    return mounts(SandboxSpec(
        uid=uid, etc_dir=etc_dir, readonly_paths=(base_prefix,), sidecar_dir=sidecar_dir,
        workdir_bytes=workdir_bytes, tmp_bytes=tmp_bytes, cgroup_mount=cgroup_memory,
        extra_readonly=((venv, PYTHON_MOUNT), (mpl_cache, MPL_SEED))))


def _kill_spawned(exchange: asyncio.Future[tuple[dict[str, Any], list[int]]]) -> None:
    """The sandbox a cancelled spawn got after all: killed (its pidfd), fds closed."""
    if exchange.cancelled() or exchange.exception() is not None:
        return
    reply, received = exchange.result()
    for fd in received:
        if reply.get("ok"):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.close(fd)


class ZygoteFactory:
    """One zygote process and its control socket."""

    def __init__(self, *, venv: Path, sidecar_dir: Path, mpl_cache: Path,
                 preload: tuple[str, ...], log_path: Path, setpriv: Path | None) -> None:
        self._config = {"venv": str(venv), "sidecar": str(sidecar_dir),
                        "mplconfig": str(mpl_cache)}
        self._preload = preload
        self._log_path = log_path
        self._setpriv = setpriv
        self._socket: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.failed: list[str] = []
        #: The pages every sandbox copies right after its fork (``calibration.py``).
        self.prefault: dict[str, list[list[int]]] | None = None

    async def start(self, timeout: float = 120.0) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = json.dumps({**self._config, "control_fd": theirs.fileno()})
        argv = [sys.executable, "-I", "-B", "-c",
                ZYGOTE_BOOT.format(path=str(Path(self._config["sidecar"]).parent)), config]
        if self._setpriv is not None:
            argv = [str(self._setpriv), "--pdeathsig", "KILL", "--", *argv]
        try:
            with self._log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *argv, env={}, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        self._socket = ours
        ours.send(json.dumps({"preload": list(self._preload)}).encode())
        try:
            reply = await asyncio.wait_for(asyncio.to_thread(ours.recv, 1 << 16), timeout)
        except TimeoutError as exc:
            await self.stop()
            raise ZygoteError(f"the zygote was not ready after {timeout:.0f}s") from exc
        if not reply:
            await self.stop()
            raise ZygoteError(f"the zygote exited while starting; see {self._log_path}")
        self.failed = list(json.loads(reply).get("failed", []))

    def _exchange(self, message: bytes, fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        assert self._socket is not None
        socket.send_fds(self._socket, [message], fds)
        data, received, _, _ = socket.recv_fds(self._socket, 1 << 16, 1)
        if not data:
            raise ZygoteError("the zygote is gone")
        reply: dict[str, Any] = json.loads(data)
        return reply, received

    async def _ask(self, message: dict[str, Any],
                   fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """One message to the zygote and its reply (with the fds it sent), one at a time."""
        if self._socket is None:
            raise ZygoteError("the zygote is not running")
        async with self._lock:
            return await asyncio.to_thread(self._exchange, json.dumps(message).encode(), fds)

    async def _ask_with_copies(self, message: dict[str, Any],
                               fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        copies = [os.dup(fd) for fd in fds]
        try:
            return await self._ask(message, copies)
        finally:
            for fd in copies:
                os.close(fd)

    async def use_prefault(self, plan: dict[str, list[list[int]]]) -> None:
        """Hand the zygote the calibration's pages, once: every later spawn asked to
        pre-fault copies them."""
        reply, received = await self._ask({"prefault_plan": plan}, [])
        for fd in received:
            os.close(fd)
        if not reply.get("ok"):
            raise ZygoteError(f"the zygote refused the pre-fault plan: {reply.get('error')}")
        self.prefault = plan

    async def spawn(self, request: dict[str, Any], fds: list[int], *,
                    prefault: bool) -> tuple[int, int]:
        """A new sandbox: its parent's pid and a pidfd of it (the caller closes it).
        ``prefault``: it copies the calibration's pages, if there are any, before it is
        ready."""
        if prefault and self.prefault is not None:
            request = {**request, "prefault": True}
        # The exchange runs to its end even if the caller is cancelled (its reply must not
        # be left for the next spawn to read), with copies of the fds (the caller closes
        # its own); a sandbox forked for a caller that is gone is killed.
        exchange = asyncio.ensure_future(self._ask_with_copies(request, fds))
        try:
            reply, received = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            exchange.add_done_callback(_kill_spawned)
            raise
        if not reply.get("ok") or not received:
            for fd in received:
                os.close(fd)
            raise ZygoteError(f"the zygote could not fork a sandbox: {reply.get('error')}")
        return int(reply["pid"]), received[0]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()  # the zygote exits when its control socket closes
            self._socket = None
        process = self._process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                process.kill()
                await process.wait()
