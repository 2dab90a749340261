"""One local sandbox: an nsjail process whose PID 1 is the executor.

Start: make the sandbox dir, bind a unix socket there and pass the listening fd
into the sandbox (the socket's path is not visible inside, and user code never
holds the fd), create its cgroups, launch nsjail under an empty environment, wait
for the executor's ``/health``. Destroy: kill everything in its cgroups (or nsjail
itself), remove the cgroups and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ...executor import ExecutorClient, ExecutorError
from .cgroups import CgroupManager, SandboxCgroups, join_cgroups_command
from .nsjail import PYTHON_MOUNT, SIDECAR_MOUNT, WORKDIR, SandboxSpec, nsjail_argv, write_etc
from .runtime import PythonRuntime
from .zygote import ZygoteError, ZygoteFactory, mount_plan

__all__ = ["LocalSandbox", "SandboxConfig", "SandboxStartError"]

logger = logging.getLogger(__name__)


class SandboxStartError(Exception):
    """The sandbox could not be started or its executor never became ready."""


@attrs.frozen
class SandboxConfig:
    """What every sandbox of this service shares."""

    nsjail: Path
    root_dir: Path
    sidecar_dir: Path
    runtime: PythonRuntime
    memory_bytes: int
    max_processes: int
    workdir_bytes: int
    tmp_bytes: int
    max_output_bytes: int
    compile_timeout: int
    preload: tuple[str, ...]
    #: Where the executors' unix sockets live (a short path: ``sun_path`` is 108 bytes).
    socket_dir: Path
    #: util-linux ``setpriv``, to tie the sandbox's life to this process (if present).
    setpriv: Path | None = None
    ready_timeout: float = 60.0


class LocalSandbox:
    """A single-use sandbox for one language."""

    def __init__(self, sandbox_id: str, language: str, config: SandboxConfig,
                 cgroups: CgroupManager, uid: int, *,
                 tcp_address: tuple[str, int] | None = None,
                 extra_env: Mapping[str, str] | None = None,
                 factory: ZygoteFactory | None = None, calibrate: bool = False,
                 prefault: bool = False) -> None:
        self.id = sandbox_id
        self.language = language
        self.config = config
        self.directory = config.root_dir / sandbox_id
        self.socket_path = config.socket_dir / f"{sandbox_id}.sock"
        #: Listen on this host address instead of a unix socket (emulated pods).
        self.tcp_address = tcp_address
        self.address = (f"http://{tcp_address[0]}:{tcp_address[1]}" if tcp_address
                        else f"unix:{self.socket_path}")
        self.extra_env = dict(extra_env or {})
        #: A zygote sandbox copies the calibration's pages before it is ready.
        self.prefault = prefault
        self.hostname = self.extra_env.get("HOSTNAME", "sandbox")
        self.uid = uid
        self._cgroup_manager = cgroups
        self._cgroups: SandboxCgroups | None = None
        self._process: asyncio.subprocess.Process | None = None
        #: Made by the zygote (``zygote.py``) instead of nsjail: its parent's pidfd.
        self._factory = factory if tcp_address is None and not extra_env else None
        self._pidfd: int | None = None
        #: The sandbox's outermost process: nsjail, or the zygote's child (its PID 1).
        self.pid: int | None = None
        #: A calibration sandbox (``calibration.py``): its executor records its pages.
        self.calibrate = calibrate
        #: Set when its destruction failed (a cgroup that would not go): its uid is retired.
        self.retired = False
        self.executor = ExecutorClient(self.address)

    @property
    def alive(self) -> bool:
        """False once the sandbox process has exited (it cannot serve any more)."""
        if self._pidfd is not None:  # readable once the process has exited
            poller = select.poll()  # (select() refuses fds past 1023)
            poller.register(self._pidfd, select.POLLIN)
            return not poller.poll(0)
        return self._process is not None and self._process.returncode is None

    async def wait(self) -> int | None:
        """Wait until the sandbox process exits; its return code (None if never started)."""
        if self._process is None:
            return None
        return await self._process.wait()

    def _executor_command(self, listen_fd: int) -> list[str]:
        bootstrap = (f"import sys, runpy; sys.path.insert(0, {SIDECAR_MOUNT!r}); "
                     "runpy.run_module('sidecar', run_name='__main__', alter_sys=True)")
        return [f"{PYTHON_MOUNT}/bin/python3", "-I", "-c", bootstrap,
                *self._executor_args(listen_fd)]

    def _executor_args(self, listen_fd: int) -> list[str]:
        command = [
            "--lang", self.language, "--listen-fd", str(listen_fd), "--workdir", WORKDIR,
            "--max-output-bytes", str(self.config.max_output_bytes),
            "--memory-mb", str(self.config.memory_bytes // (1024 * 1024)),
            "--file-size-bytes", str(self.config.workdir_bytes),
            "--max-upload-bytes", str(self.config.workdir_bytes),
            "--compile-timeout", str(self.config.compile_timeout),
            "--preload", ",".join(self.config.preload),
            "--mpl-seed-dir", f"{SIDECAR_MOUNT}/mplconfig",
            "--env", f"PATH={PYTHON_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin",
            *(arg for key, value in self.extra_env.items() for arg in ("--env", f"{key}={value}")),
        ]
        if self.calibrate:
            command.append("--calibrate")
        if self._cgroups is not None:
            command += ["--cgroup-dir", "/sys/fs/cgroup"]
        else:
            command += ["--address-space-bytes", str(self.config.memory_bytes)]
        if self._cgroups is not None or self.uid != os.getuid():
            # RLIMIT_NPROC, beside the pids cgroup or in its place: it counts the processes
            # of the sandbox's uid, which only means this sandbox when the uid is its own
            # (as root); sharing the service's uid it would count the service's too.
            command += ["--processes", str(self.config.max_processes)]
        return command

    async def start(self) -> None:
        """Launch the sandbox and wait until its executor is ready. Whatever fails (or a
        cancellation, e.g. at shutdown) leaves nothing behind: no process, cgroup,
        directory or socket; a failure is a ``SandboxStartError``."""
        # The file system work in a thread: the event loop goes on serving meanwhile.
        prepare = asyncio.ensure_future(asyncio.to_thread(self._prepare))
        try:
            self._cgroups = await asyncio.shield(prepare)
            listener = self._bind()
            try:
                os.set_inheritable(listener.fileno(), True)
                await self._spawn(listener)
            finally:
                listener.close()  # the sandbox holds its own copy of the listening socket
            await self.executor.wait_ready(self.config.ready_timeout, alive=lambda: self.alive)
        except ExecutorError as exc:
            log_tail = self._log_tail()
            await self._abandon(prepare)
            raise SandboxStartError(f"sandbox {self.id} ({self.language}) did not become "
                                    f"ready: {exc}; executor log: {log_tail}") from exc
        except (OSError, ZygoteError) as exc:
            await self._abandon(prepare)
            raise SandboxStartError(f"sandbox {self.id} ({self.language}) could not start: "
                                    f"{exc}") from exc
        except BaseException:
            await self._abandon(prepare)
            raise

    async def _abandon(self, prepare: asyncio.Future[SandboxCgroups | None]) -> None:
        """Destroy a sandbox whose start failed, to the end even if the caller is cancelled
        again meanwhile (then that cancellation is raised once it is done). A teardown that
        fails is logged, the sandbox marked ``retired``: the start's own error is raised."""
        teardown = asyncio.ensure_future(self._teardown(prepare))
        cancelled = False
        while not teardown.done():
            try:
                await asyncio.wait({teardown})  # neither cancels it nor raises its error
            except asyncio.CancelledError:
                cancelled = True
        failure = None if teardown.cancelled() else teardown.exception()
        if failure is not None:
            logger.error("a sandbox that failed to start was not fully destroyed",
                         exc_info=failure, extra={"sandbox_id": self.id, "uid": self.uid})
        if cancelled:
            raise asyncio.CancelledError

    async def _teardown(self, prepare: asyncio.Future[SandboxCgroups | None]) -> None:
        """Once the preparation (a thread a cancellation does not stop) is over, its
        cgroups are known too: then destroy."""
        await asyncio.wait({prepare})  # its own error, if any, is the one start() raises
        if not prepare.cancelled() and prepare.exception() is None:
            self._cgroups = prepare.result()
        await self.destroy()

    def _prepare(self) -> SandboxCgroups | None:
        """The sandbox's directory, its identity files and its cgroups (blocking)."""
        self.directory.mkdir(mode=0o700)
        if self._factory is None:
            write_etc(self.directory / "etc", self.uid)
        else:  # one set of identity files per uid, shared by its zygote sandboxes
            etc_dir = self._zygote_etc_dir()
            if not (etc_dir / "hostname").exists():
                (self.config.root_dir / "mnt").mkdir(mode=0o700, exist_ok=True)
                write_etc(etc_dir, self.uid)
        if not self._cgroup_manager.available:
            return None
        # tmpfs pages are charged to the writer's cgroup: the work dir and /tmp get their
        # own budget on top of the program's memory.
        budget = self.config.memory_bytes + self.config.workdir_bytes + self.config.tmp_bytes
        return self._cgroup_manager.create(self.id, budget, self.config.max_processes)

    def _zygote_etc_dir(self) -> Path:
        return self.config.root_dir / "etc" / str(self.uid)

    def _bind(self) -> socket.socket:
        """The executor's listening socket, bound here and passed into the sandbox."""
        if self.tcp_address is not None:
            return socket.create_server(self.tcp_address, backlog=16)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        return listener

    async def _spawn(self, listener: socket.socket) -> None:
        if self._factory is not None and self._cgroups is not None:
            await self._spawn_from_zygote(listener, self._cgroups)
            return
        fd = listener.fileno()
        runtime = self.config.runtime
        spec = SandboxSpec(
            uid=self.uid, etc_dir=self.directory / "etc", hostname=self.hostname,
            readonly_paths=(runtime.base_prefix,),
            sidecar_dir=self.config.sidecar_dir,
            workdir_bytes=self.config.workdir_bytes, tmp_bytes=self.config.tmp_bytes,
            cgroup_mount=self._cgroups.memory if self._cgroups else None,
            pass_fds=(fd,),
            extra_readonly=((runtime.venv, PYTHON_MOUNT),
                            (runtime.mpl_cache, f"{SIDECAR_MOUNT}/mplconfig")),
        )
        argv: Sequence[str] = nsjail_argv(self.config.nsjail, spec, self._executor_command(fd))
        if self.config.setpriv is not None:
            # nsjail dies with this process, and the sandbox dies with nsjail.
            argv = [str(self.config.setpriv), "--pdeathsig", "KILL", "--", *argv]
        if self._cgroups is not None:
            argv = [*join_cgroups_command(self._cgroups), *argv]
        with (self.directory / "executor.log").open("wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *argv, env={}, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                stderr=log_file, pass_fds=(fd,), start_new_session=True,
            )
        self.pid = self._process.pid

    async def _spawn_from_zygote(self, listener: socket.socket, cgroups: SandboxCgroups) -> None:
        assert self._factory is not None
        runtime = self.config.runtime
        # Shared by every zygote sandbox: the mount point of its root (each mounts its own
        # there, in its own mount namespace) and one set of identity files per uid, both
        # made by ``_prepare``.
        root = self.config.root_dir / "mnt"
        etc_dir = self._zygote_etc_dir()
        request = {
            "root": str(root), "hostname": self.hostname, "uid": self.uid,
            "cgroup_procs": [str(path) for path in cgroups.procs_files],
            "argv": self._executor_args(3),  # the zygote puts the listener at fd 3
            "mounts": mount_plan(
                uid=self.uid, etc_dir=etc_dir,
                workdir_bytes=self.config.workdir_bytes, tmp_bytes=self.config.tmp_bytes,
                base_prefix=runtime.base_prefix, sidecar_dir=self.config.sidecar_dir,
                venv=runtime.venv, mpl_cache=runtime.mpl_cache, cgroup_memory=cgroups.memory)}
        with (self.directory / "executor.log").open("wb") as log_file:
            self.pid, self._pidfd = await self._factory.spawn(
                request, [listener.fileno(), log_file.fileno()], prefault=self.prefault)

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.directory / "executor.log").read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    async def limit_memory(self, program_bytes: int) -> bool:
        """Lower the program's memory budget (the tmpfs budgets stay); False without cgroups."""
        if self._cgroups is None:
            return False
        budget = program_bytes + self.config.workdir_bytes + self.config.tmp_bytes
        await asyncio.to_thread(self._cgroup_manager.limit_memory, self._cgroups, budget)
        return True

    async def destroy(self) -> None:
        """Kill everything in the sandbox and remove its traces; idempotent. Every step is
        taken even when one fails; then the first failure (an ``OSError``: a cgroup that
        could not be removed, so something may still run) is raised."""
        await self.executor.close()
        failure: OSError | None = None
        if self._cgroups is not None:
            # Everything in the sandbox, nsjail included, is a member of its cgroups.
            try:
                await asyncio.to_thread(self._cgroup_manager.destroy, self._cgroups)
            except OSError as exc:
                failure = exc
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone with its cgroups
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            os.close(self._pidfd)
            self._pidfd = None
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # nsjail SIGKILLs the sandbox's PID 1
            try:
                await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.to_thread(shutil.rmtree, self.directory, ignore_errors=True)
        self.socket_path.unlink(missing_ok=True)
        if failure is not None:
            self.retired = True  # something of it may still run: its uid is never reused
            raise failure
