"""The naive service: per request, the sandbox tool starts a fresh ``python3``.

What a code-execution service without warm pools does: ``POST /exec`` with
``{"code": ...}`` runs ``nsjail ... python3 -c CODE`` (the same nsjail command line,
namespaces, mounts and seccomp policy as the real local backend, the same Python
runtime, no cgroups, no state, no files) and answers ``{"stdout", "stderr", "code"}``.
It is the throughput and latency baseline of ``nox -s bench``.

Run: ``python -m bench.naive --port PORT --runtime-dir DIR --work-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from pathlib import Path

import orjson

import sidecar
from app.backends.local.nsjail import (
    PYTHON_MOUNT,
    SandboxSpec,
    locate_nsjail,
    nsjail_argv,
    write_etc,
)
from app.backends.local.runtime import ensure_runtime

__all__ = ["NaiveService", "main"]

_MB = 1024 * 1024


class NaiveService:
    """Spawn-per-request execution over a minimal HTTP/1.1 server."""

    def __init__(self, runtime_dir: Path, work_dir: Path) -> None:
        runtime = ensure_runtime(runtime_dir, log=False)
        self.nsjail = locate_nsjail()
        self.work_dir = work_dir
        self.runtime = runtime
        base_uid = 3_000_000 if os.geteuid() == 0 else os.getuid()
        self._uids = itertools.cycle(range(base_uid, base_uid + 1000)) \
            if os.geteuid() == 0 else itertools.repeat(base_uid)

    def argv(self, code: str) -> list[str]:
        uid = next(self._uids)
        etc_dir = self.work_dir / "etc"
        if not etc_dir.exists():
            write_etc(etc_dir, uid)
        spec = SandboxSpec(uid=uid, etc_dir=etc_dir, readonly_paths=(self.runtime.base_prefix,),
                           sidecar_dir=Path(sidecar.__file__).parent, workdir_bytes=64 * _MB,
                           tmp_bytes=64 * _MB,
                           extra_readonly=((self.runtime.venv, PYTHON_MOUNT),))
        path = f"PATH={PYTHON_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin"
        return nsjail_argv(self.nsjail, spec, ["/usr/bin/env", "-i", path, "HOME=/tmp",
                                               "LANG=C.UTF-8", f"{PYTHON_MOUNT}/bin/python3",
                                               "-c", code])

    async def run(self, code: str) -> dict[str, object]:
        process = await asyncio.create_subprocess_exec(
            *self.argv(code), env={}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
            return {"stdout": "", "stderr": "timeout", "code": None}
        return {"stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace"),
                "code": process.returncode}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                method, path = request_line.split()[:2]
                if method == b"GET" and path == b"/health":
                    status, payload = 200, orjson.dumps({"status": "healthy"})
                elif method == b"POST" and path == b"/exec":
                    status, payload = 200, orjson.dumps(await self.run(orjson.loads(body)["code"]))
                else:
                    status, payload = 404, b'{"error":"not_found"}'
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _serve(port: int, service: NaiveService) -> None:
    server = await asyncio.start_server(service.handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-dir", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(args.port, NaiveService(args.runtime_dir, args.work_dir)))


if __name__ == "__main__":
    main()
