"""The executor's side of Python state: hand a blob to the warm interpreter, read one back.

The executor never unpickles or decompresses a blob: restoring and capturing happen
in the warm interpreter (``sidecar/pystate.py``), in the user's process. The blob to
restore goes to it on stdin, after the JSON line (never through a file the user's
code could swap). The capture comes back as two files in the build directory, a
blob and a report written last; they are read through a directory fd opened before
the run, with ``O_NOFOLLOW``, regular files only and size caps, so the user's code
can neither redirect the read nor make it unbounded. Whatever the files hold is
treated as untrusted bytes: the API signs it for the session it came from, and it is
only ever unpickled inside a later sandbox of that same session.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
from typing import Any

from .protocol import ExecuteRequest, ExecuteResult
from .pystate import FORMAT_VERSION, LZ4_MAGIC

__all__ = ["BLOB_NAME", "REPORT_NAME", "StateExchange"]

BLOB_NAME = "state.blob"
REPORT_NAME = "state.report.json"
_MAX_REPORT_BYTES = 1024 * 1024
_MAX_ERRORS = 200
_STATUSES = ("captured", "empty", "skipped")


class StateExchange:
    """The state part of one Python execution, from the stdin message to the result."""

    def __init__(self, build_dir: str, request: ExecuteRequest) -> None:
        self.request = request
        self.build_dir = build_dir
        self._dir_fd: int | None = None
        if request.capture_state:
            self._dir_fd = os.open(build_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                   | os.O_CLOEXEC)
            for name in (BLOB_NAME, REPORT_NAME):
                self._unlink(name)

    def message(self) -> dict[str, Any]:
        """The ``state`` entry of the warm interpreter's JSON line."""
        request = self.request
        if request.state is None and not request.capture_state:
            return {}
        return {"state": {
            "capture": request.capture_state, "on_error": request.capture_state_on_error,
            "max_bytes": request.max_state_bytes, "max_raw_bytes": request.max_state_raw_bytes,
            "blob_path": os.path.join(self.build_dir, BLOB_NAME),
            "report_path": os.path.join(self.build_dir, REPORT_NAME)}}

    def stdin_payload(self, message: dict[str, Any]) -> bytes:
        """The JSON line, then the raw blob to restore (if any)."""
        return json.dumps({**message, **self.message()}).encode() + b"\n" + (
            self.request.state or b"")

    def collect(self, result: ExecuteResult) -> ExecuteResult:
        """Fill the result's state fields from what the capture left (then remove it)."""
        if self._dir_fd is None:
            return result
        try:
            self._collect(result)
        finally:
            for name in (BLOB_NAME, REPORT_NAME):
                self._cleanup(name)
            os.close(self._dir_fd)
            self._dir_fd = None
        return result

    def _collect(self, result: ExecuteResult) -> None:
        result.state_status = "skipped"
        report = _parse_report(self._read(REPORT_NAME, _MAX_REPORT_BYTES))
        if report is None:
            return  # the capture did not finish (timeout, memory, killed): nothing changes
        status, errors, seconds = report
        result.state_errors = errors
        result.state_restore_time = seconds.get("restore")
        result.state_capture_time = seconds.get("capture")
        if status != "captured":
            result.state_status = status
            return
        blob = self._read(BLOB_NAME, self.request.max_state_bytes)
        if blob is None or len(blob) < 5 or blob[0] != FORMAT_VERSION or blob[1:5] != LZ4_MAGIC:
            result.state_status = "empty"
            result.state_errors.append({"name": "*", "type": "state", "error": (
                "the captured state was missing, malformed or larger than "
                f"{self.request.max_state_bytes} bytes")})
            return
        result.state_status = "captured"
        result.state = base64.b64encode(blob).decode("ascii")

    def _read(self, name: str, limit: int) -> bytes | None:
        """A regular file of the build dir, or None (missing, not regular, over ``limit``)."""
        assert self._dir_fd is not None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self._dir_fd)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                return None
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read(limit + 1)
        finally:
            os.close(fd)
        return data if len(data) <= limit else None

    def _unlink(self, name: str) -> None:
        assert self._dir_fd is not None
        with contextlib.suppress(FileNotFoundError):  # nothing to remove
            os.unlink(name, dir_fd=self._dir_fd)

    def _cleanup(self, name: str) -> None:
        """Free the tmpfs after the run; what the user's code put there may stay (a
        directory, a read-only build dir): the sandbox is destroyed after this run."""
        assert self._dir_fd is not None
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self._dir_fd)


def _parse_report(data: bytes | None,
                  ) -> tuple[str, list[dict[str, str]], dict[str, float]] | None:
    """``(status, errors, seconds by step)`` from the report; None when missing or unreadable."""
    if data is None:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") not in _STATUSES:
        return None
    errors: list[dict[str, str]] = []
    raw_errors = body.get("errors")
    for entry in raw_errors[:_MAX_ERRORS] if isinstance(raw_errors, list) else []:
        if isinstance(entry, dict):
            errors.append({key: str(entry.get(key, ""))[:500] for key in ("name", "type",
                                                                          "error")})
    more = body.get("more_errors")
    if isinstance(more, int) and not isinstance(more, bool) and more > 0:
        errors.append({"name": "*", "type": "state", "error": f"{more} more not listed"})
    return str(body["status"]), errors, _seconds(body.get("seconds"))


def _seconds(raw: Any) -> dict[str, float]:
    """The restore and capture durations the report gives (written by the user's process:
    only plausible numbers are kept)."""
    if not isinstance(raw, dict):
        return {}
    return {step: round(float(value), 6) for step, value in raw.items()
            if step in ("restore", "capture") and isinstance(value, (int, float))
            and not isinstance(value, bool) and 0 <= value < 86400}
