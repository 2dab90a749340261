"""Python session state inside the sandbox: capturing a namespace (restoring one is
``pyrestore``).

This module runs in the warm interpreter (``pywarm``), in the user's own process and
under the user's limits. The executor and the API treat blobs as opaque bytes.

Blob format: one version byte (``FORMAT_VERSION``), then an lz4 frame of a
cloudpickle of ``{"namespace": {name: value}, "modules": {alias: module name}}``.

Capture (after the user's code): names starting with ``_`` are skipped; modules are
recorded by name (restored from ``sys.modules``: the pre-imported libraries are not
imported again); file objects are named and left out. The rest is first pickled
together in one pass (the common case: everything can be kept); only if that fails
is every value trial-pickled on its own, into a sink that counts and compresses
without keeping anything and stops at the size caps, so a value that cannot be kept
(generator, frame, lock, socket, a file inside a value, too large) is named in the
report instead of failing the run, and the survivors are pickled together. Either
way the kept values are pickled in one call, so shared references survive. The
outcome is written last, as a small JSON report beside the blob.

cloudpickle and lz4 come from the sandbox's Python runtime; without them state is
reported as unavailable. Standard library otherwise.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import resource
import socket
import sys
import time
import types
from typing import Any, BinaryIO

__all__ = ["FORMAT_VERSION", "LZ4_MAGIC", "capture", "report"]

FORMAT_VERSION = 1
LZ4_MAGIC = b"\x04\x22\x4d\x18"
_MAX_PROBLEMS = 200


class StateUnavailable(RuntimeError):
    """cloudpickle or lz4 is not installed in this runtime."""


class StateTooLarge(ValueError):
    """The state passed a size cap (pickled, compressed or decompressed)."""


class StateRefused(ValueError):
    """A blob that is not a state of this format."""


def _libraries() -> tuple[Any, Any]:
    try:
        return importlib.import_module("cloudpickle"), importlib.import_module("lz4.frame")
    except ImportError as exc:
        raise StateUnavailable(f"Python state needs cloudpickle and lz4: {exc}") from exc


def _problem(name: str, value: object, error: str) -> dict[str, str]:
    """One entry of ``state_errors``: the name, the value's type, what went wrong."""
    return {"name": name[:200], "type": type(value).__name__[:200], "error": error[:500]}


def _state_problem(error: str) -> dict[str, str]:
    return {"name": "*", "type": "state", "error": error[:500]}


def _unlink(path: str) -> None:
    """Remove a file left at ``path`` (the user's code may have put one there)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- capture ----------------------------------------------------------------------


def _is_file(obj: object) -> bool:
    """Files of any mode (cloudpickle would embed a readable file's content)."""
    return isinstance(obj, io.IOBase) and not isinstance(obj, io.BytesIO | io.StringIO)


class _Sink:
    """A pickle's file: counts raw bytes, compresses them, enforces both caps."""

    def __init__(self, lz4f: Any, max_raw: int, max_compressed: int,
                 out: BinaryIO | None = None) -> None:
        self.raw = 0
        self.compressed = 1  # the version byte
        self._max_raw, self._max_compressed = max_raw, max_compressed
        self._out = out
        self._compressor = lz4f.LZ4FrameCompressor()
        self._emit(bytes([FORMAT_VERSION]) + self._compressor.begin())

    def _emit(self, data: bytes) -> None:
        self.compressed += len(data)
        if self.compressed > self._max_compressed:
            raise StateTooLarge(f"more than {self._max_compressed} bytes once compressed")
        if self._out is not None:
            self._out.write(data)

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.raw += size
        if self.raw > self._max_raw:
            raise StateTooLarge(f"more than {self._max_raw} bytes once pickled")
        self._emit(self._compressor.compress(data))
        return size

    def finish(self) -> None:
        self._emit(self._compressor.flush())


_PICKLERS: dict[int, type] = {}  # one class per cloudpickle module (made once)


def _pickler(cloudpickle: Any) -> type:
    if id(cloudpickle) in _PICKLERS:
        return _PICKLERS[id(cloudpickle)]

    class _Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]
        """Refuses file objects anywhere in the value, not only at the top."""

        def reducer_override(self, obj: object) -> Any:
            if _is_file(obj) or isinstance(obj, socket.socket):
                raise pickle.PicklingError(f"{type(obj).__name__} objects are not kept")
            return super().reducer_override(obj)

    return _PICKLERS.setdefault(id(cloudpickle), _Pickler)


def _dump(pickler: type, value: object, sink: _Sink) -> None:
    pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    sink.finish()


def _compressed_cap(max_bytes: int) -> int:
    """The blob cap, and never past RLIMIT_FSIZE (the write would kill the process)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return max_bytes if soft == resource.RLIM_INFINITY else min(max_bytes, soft - 1)


def capture(namespace: dict[str, Any], config: dict[str, Any],
            problems: list[dict[str, str]], timings: dict[str, float] | None = None) -> None:
    """Write the namespace's blob and the report; every failure ends up in the report.

    ``timings`` (seconds by step, e.g. the restore's) go into the report with the
    capture's own.
    """
    began = time.perf_counter()
    try:
        status = _capture(namespace, config, problems)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure keeps the previous state
        problems.append(_state_problem(f"the state could not be captured: {_describe(exc)}"))
        status = "skipped"
    report(config, status, problems, {**(timings or {}), "capture": time.perf_counter() - began})


def _capture(namespace: dict[str, Any], config: dict[str, Any],
             problems: list[dict[str, str]]) -> str:
    modules: dict[str, str] = {}
    candidates: dict[str, Any] = {}
    for name, value in list(namespace.items()):
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType):
            if sys.modules.get(value.__name__) is value:
                modules[name] = value.__name__
            else:
                problems.append(_problem(name, value, "a module that cannot be imported by name"))
            continue
        if _is_file(value):
            problems.append(_problem(name, value, "file objects are not kept; open it again"))
            continue
        candidates[name] = value
    if not candidates and not modules:
        return "empty"
    cloudpickle, lz4f = _libraries()
    pickling = _Pickling(_pickler(cloudpickle), lz4f, int(config["max_raw_bytes"]),
                         _compressed_cap(int(config["max_bytes"])))
    # The common case in one pass: everything pickles, together, within the caps.
    if pickling.write(config["blob_path"], {"namespace": candidates, "modules": modules}) is None:
        return "captured"
    kept = pickling.keepable(candidates, problems)
    if not kept and not modules:
        return "empty"
    failure = pickling.write(config["blob_path"], {"namespace": kept, "modules": modules})
    if failure is not None:  # nothing of this run is kept
        problems.extend(_problem(name, value, "cannot be kept together with the rest: "
                                 f"{failure}") for name, value in kept.items())
        return "empty"
    return "captured"


class _Pickling:
    """How a capture pickles: the pickler, lz4, and the caps (pickled, stored)."""

    def __init__(self, pickler: type, lz4f: Any, max_raw: int, max_bytes: int) -> None:
        self.pickler, self.lz4f = pickler, lz4f
        self.max_raw, self.max_bytes = max_raw, max_bytes

    def keepable(self, candidates: dict[str, Any],
                 problems: list[dict[str, str]]) -> dict[str, Any]:
        """Each value tried alone (what fails is named); the smallest first within the caps."""
        sizes: list[tuple[int, int, str]] = []
        for name, value in candidates.items():
            sink = _Sink(self.lz4f, self.max_raw, self.max_bytes)
            try:
                _dump(self.pickler, value, sink)
            except StateTooLarge as exc:
                problems.append(_problem(name, value, f"too large to keep: {exc}"))
            except Exception as exc:  # noqa: BLE001 - any value's own pickling error is reported
                problems.append(_problem(name, value, f"cannot be kept: {_describe(exc)}"))
            else:
                sizes.append((sink.compressed, sink.raw, name))
        kept: dict[str, Any] = {}
        total_raw, total_compressed = 0, 0
        for compressed, raw, name in sorted(sizes):  # the smallest first: keep the most names
            if total_raw + raw > self.max_raw or total_compressed + compressed > self.max_bytes:
                problems.append(_problem(name, candidates[name], "too large to keep together "
                                         f"with the rest (limits {self.max_raw} pickled, "
                                         f"{self.max_bytes} stored)"))
                continue
            kept[name] = candidates[name]
            total_raw, total_compressed = total_raw + raw, total_compressed + compressed
        return kept

    def write(self, path: str, payload: dict[str, Any]) -> str | None:
        """Pickle ``payload`` into the blob file: None, or why it failed (file emptied)."""
        _unlink(path)
        with open(path, "wb") as out:
            try:
                _dump(self.pickler, payload, _Sink(self.lz4f, self.max_raw, self.max_bytes, out))
            except Exception as exc:  # noqa: BLE001 - reported by the caller, or tried per value
                out.truncate(0)
                return _describe(exc)
        return None


def report(config: dict[str, Any], status: str, problems: list[dict[str, str]],
           timings: dict[str, float] | None = None) -> None:
    """The capture's outcome for the executor: written last, so it marks completion."""
    body = {"status": status, "errors": problems[:_MAX_PROBLEMS],
            "more_errors": max(0, len(problems) - _MAX_PROBLEMS),
            "seconds": {step: round(value, 6) for step, value in (timings or {}).items()}}
    data = json.dumps(body).encode()
    try:
        _unlink(config["report_path"])
        fd = os.open(config["report_path"], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
    except OSError as exc:  # /tmp full, or the user's code took the path: nothing is kept
        sys.stderr.write(f"[state] the session's variables were not saved: {_describe(exc)}\n")
