"""Helpers of the state tests: run Python in a session, build blobs with the runtime's lz4.

The test process does not import lz4 or cloudpickle: blobs are built by the sandbox
runtime's own interpreter in a subprocess, the same libraries the sandboxes use.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

#: The state format's version byte (``sidecar/pystate.py``).
VERSION = b"\x01"

_COMPRESS = """
import sys, lz4.frame
sys.stdout.buffer.write(lz4.frame.compress(sys.stdin.buffer.read(), store_size=False))
"""

# A pickle that asks for a bytes object of SIZE bytes, then SIZE zeros, compressed as
# it streams (nothing of that size is ever held in memory here).
_BOMB = """
import struct, sys, lz4.frame
size = int(sys.argv[1])
declare = sys.argv[2] == "declare"
compressor = lz4.frame.LZ4FrameCompressor()
out = sys.stdout.buffer
out.write(compressor.begin(source_size=size + 11 if declare else 0))
out.write(compressor.compress(b"\\x80\\x05\\x8e" + struct.pack("<Q", size)))
zeros = bytes(64 * 1024 * 1024)
left = size
while left > 0:
    out.write(compressor.compress(zeros[:min(left, len(zeros))]))
    left -= len(zeros)
out.write(compressor.flush())
"""


def runtime_python(runtime_dir: Path) -> str:
    return str(runtime_dir / "python" / "bin" / "python3")


def lz4_blob(runtime_dir: Path, payload: bytes) -> bytes:
    """A state blob around ``payload`` (version byte, then an lz4 frame)."""
    frame = subprocess.run([runtime_python(runtime_dir), "-c", _COMPRESS], input=payload,
                           capture_output=True, check=True, timeout=120).stdout
    return VERSION + frame


def bomb_blob(runtime_dir: Path, size: int, *, declare: bool) -> bytes:
    """A blob whose pickle claims ``size`` bytes of zeros (declared in the frame or not)."""
    frame = subprocess.run([runtime_python(runtime_dir), "-c", _BOMB, str(size),
                            "declare" if declare else "stream"],
                           capture_output=True, check=True, timeout=300).stdout
    return VERSION + frame


def run_py(client: httpx.Client, code: str, session_id: str | None = None,
           **fields: Any) -> dict[str, Any]:
    """Run Python (in ``session_id`` if given) and return the answer's JSON."""
    body: dict[str, Any] = {"lang": "py", "code": code, **fields}
    if session_id is not None:
        body["session_id"] = session_id
    response = client.post("/exec", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def error_names(answer: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in answer.get("state_errors") or []}


def assert_healthy(client: httpx.Client) -> None:
    """The service answers, and a normal execution still works."""
    assert client.get("/health").status_code == 200
    answer = run_py(client, "print(6 * 7)")
    assert answer["status"] == "ok" and answer["stdout"] == "42\n", answer
