"""A real executor (``python -m sidecar --lang bash``) for the HTTP tests, and a client
that sends bytes exactly as given and reads the answers one by one.

The bash executor needs no Python runtime (no warm interpreter), so it is ready at
once. ``wrap`` runs it under another command (``unshare -m sh -c 'mount ...'`` for a
work dir of a given size); ``limit_file_size`` runs it under an ``RLIMIT_FSIZE``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port

__all__ = ["Answer", "Executor", "RawClient", "running_executor"]


@dataclass(frozen=True)
class Answer:
    """One answer: status, headers (lower-case names), body (JSON decoded if JSON)."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class RawClient:
    """One connection; requests are bytes as they are, answers read in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> Answer:
        status_line = self.file.readline()
        if not status_line:
            raise EOFError("the connection closed before an answer")
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body: Any = self.file.read(int(headers.get("content-length", "0")))
        if headers.get("content-type") == "application/json":
            body = json.loads(body)
        return Answer(int(status_line.split()[1]), headers, body)

    def at_end(self) -> bool:
        """Whether the executor closed the connection (nothing more comes)."""
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Executor:
    """A running executor: its work dir and how to reach it."""

    process: subprocess.Popen[bytes]
    work: Path
    address: str | tuple[str, int]

    def connect(self) -> RawClient:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(self.address)
        return RawClient(sock)

    def exchange(self, data: bytes) -> Answer:
        """One request on a connection of its own."""
        client = self.connect()
        try:
            client.send(data)
            return client.answer()
        finally:
            client.close()


def _with_file_size_limit(limit: int) -> list[str]:
    """A command prefix: the rest runs under an ``RLIMIT_FSIZE`` of ``limit`` bytes."""
    return [sys.executable, "-c",
            "import os, resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n"]


@contextmanager
def running_executor(tmp_path: Path, *extra: str, wrap: Sequence[str] = (),
                     tcp: bool = False, limit_file_size: int | None = None,
                     ) -> Iterator[Executor]:
    """A bash executor whose work dir is ``tmp_path / "work"``; killed afterwards."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    address: str | tuple[str, int]
    if tcp:
        address = ("127.0.0.1", free_port())
        where = ["--tcp", f"{address[0]}:{address[1]}"]
    else:
        address = str(tmp_path / "executor.sock")
        where = ["--unix", address]
    if limit_file_size is not None:
        wrap = [*_with_file_size_limit(limit_file_size), *wrap]
    process = subprocess.Popen(
        [*wrap, sys.executable, "-m", "sidecar", "--lang", "bash", *where, "--serve-unbound",
         "--workdir", str(work), "--build-dir", str(tmp_path / "build"), *extra],
        cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        deadline = time.monotonic() + 30
        while True:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(address) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the executor did not start ({process.returncode})")
            time.sleep(0.01)
        yield Executor(process, work, address)
    finally:
        process.kill()
        process.wait()
