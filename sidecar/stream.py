"""The body of the streaming ``POST /execute/stream``: NDJSON lines, chunked.

Each line is one JSON object: ``{"stream": "stdout"|"stderr", "data": "..."}`` for
output as the program produces it, then one ``{"result": {...}}`` (the same object
``POST /execute`` answers) or ``{"error": ..., "message": ...}``. Lines are sent as
HTTP/1.1 chunks (the lines waiting at that moment share one chunk) by a thread of
their own, so a slow reader never holds up the capture loop (which must keep
enforcing the timeout); what waits in the queue is bounded by the output caps.
The connection's socket doubles as the hang-up signal: when it turns readable and
a peek finds EOF (or an error), the API went away and the runner stops the
program.
"""

from __future__ import annotations

import io
import queue
import socket
import threading
from typing import Any

from .protocol import wire_json

__all__ = ["LineStream"]

_BATCH_BYTES = 256 * 1024


class LineStream:
    """Writes NDJSON lines as chunks; an ``OutputListener`` for the runner."""

    def __init__(self, connection: socket.socket, wfile: io.BufferedIOBase) -> None:
        self._connection = connection
        self._wfile = wfile
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._write_all, name="execute-stream",
                                        daemon=True)
        self._thread.start()

    # -- OutputListener -------------------------------------------------------------

    def output(self, stream: str, text: str) -> None:
        self.send({"stream": stream, "data": text})

    def hangup_fd(self) -> int | None:
        return self._connection.fileno()

    def hung_up(self) -> bool:
        if self._failed.is_set():
            return True
        try:
            peeked = self._connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:  # reset by the peer
            return True
        return peeked == b""

    # -- the body -------------------------------------------------------------------

    def send(self, line: dict[str, Any]) -> None:
        """Queue one JSON line (never blocks)."""
        self._lines.put(wire_json(line) + b"\n")

    def close(self) -> None:
        """End the body (the last chunk) and wait until everything queued was written."""
        self._lines.put(None)
        self._thread.join()

    @property
    def failed(self) -> bool:
        """True when a write failed: the peer did not get everything."""
        return self._failed.is_set()

    def _write_all(self) -> None:
        """Write queued lines, as many per chunk as are waiting (fewer writes in a flood)."""
        while True:
            batch = [self._lines.get()]
            size = len(batch[0] or b"")
            while batch[-1] is not None and size < _BATCH_BYTES:
                try:
                    line = self._lines.get_nowait()
                except queue.Empty:
                    break
                batch.append(line)
                size += len(line or b"")
            end = batch[-1] is None  # close() queues None last
            data = b"".join(line for line in batch if line is not None)
            if not self._failed.is_set():
                try:
                    if data:
                        self._wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    if end:
                        self._wfile.write(b"0\r\n\r\n")
                    self._wfile.flush()
                except OSError:  # the peer went away (EPIPE, ECONNRESET): drain from now on
                    self._failed.set()
            if end:
                return
