"""A lean HTTP/1.1 client and closed-loop load, so the client costs little CPU.

On two cores every millisecond the load generator spends is taken from the
service under test; httpx costs several times what this costs per request. It
speaks just enough HTTP/1.1 for the benchmark: keep-alive connections to
127.0.0.1, ``Content-Length`` bodies both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import orjson

__all__ = ["Connection", "LoadResult", "closed_loop", "percentile"]


class Connection:
    """One keep-alive connection to ``127.0.0.1:port``."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      extra_headers: str = "") -> tuple[int, bytes]:
        """Status and body; the connection is reopened if the server closed it."""
        reader, writer = await self._open()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}{extra_headers}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body)
        try:
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionResetError("closed")
        except ConnectionError:
            await self.close()
            reader, writer = await self._open()
            writer.write(head + body)
            status_line = await reader.readline()
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "connection" and value.strip().lower() == "close":
                close = True
            elif key == "transfer-encoding":
                raise ValueError("chunked responses are not supported by this client")
        data = await reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def post_json(self, path: str, payload: object) -> tuple[int, bytes]:
        return await self.request("POST", path, orjson.dumps(payload),
                                  "Content-Type: application/json\r\n")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    """What a closed-loop run measured inside its measurement window."""

    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    #: Every request answered during the run, the warm-up included (for CPU per request).
    answered: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def closed_loop(port: int, headers: dict[str, str] | list[dict[str, str]], path: str,
                      payload: object, *,
                      concurrency: int, duration: float, warmup: float,
                      max_requests: int = 100_000) -> LoadResult:
    """``concurrency`` workers, each sending the next request when the last returns.

    Requests finishing in the first ``warmup`` seconds are not counted (the pool's
    initial stock); the window is ``duration`` seconds after that. A list of
    ``headers``: worker ``i`` sends ``headers[i % len(headers)]`` (several tenants).
    """
    per_worker = headers if isinstance(headers, list) else [headers]
    result = LoadResult(concurrency)
    body = orjson.dumps(payload)
    started = time.perf_counter()
    window_start = started + warmup
    deadline = window_start + duration
    sent = 0

    async def worker(number: int) -> None:
        nonlocal sent
        connection = Connection(port, per_worker[number % len(per_worker)])
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                began = time.perf_counter()
                try:
                    status, _ = await connection.request(
                        "POST", path, body, "Content-Type: application/json\r\n")
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    status = 0
                    await connection.close()
                ended = time.perf_counter()
                result.answered += 1
                if window_start <= ended <= deadline:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == 200:
                        result.latencies.append(ended - began)
                    else:
                        result.errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    result.elapsed = min(time.perf_counter(), deadline) - window_start
    return result
