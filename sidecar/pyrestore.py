"""Python session state inside the sandbox: restoring a namespace from its blob.

This module runs in the warm interpreter (``pywarm``), in the user's own process and
under the user's limits: it is the only place where a state blob is ever unpickled
(the format is ``pystate``'s). The frame is decompressed incrementally under a cap on
the decompressed size (a declared content size above the cap is refused before
anything is decompressed); functions of ``__main__`` get the new namespace as their
globals, so a global reassigned later is seen by them. ``preload`` imports the state
libraries and rehearses a capture and a restore once per process image. Imported as
a top-level module from the executor's directory, like ``pystate``. Standard library
otherwise (cloudpickle and lz4 from the sandbox's runtime).
"""

from __future__ import annotations

import builtins
import importlib
import io
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecar import pystate
else:  # run from the sidecar directory (the warm worker): a top-level module there
    pystate = importlib.import_module("pystate")

__all__ = ["preload", "restore"]

_READ_CHUNK = 4 * 1024 * 1024
_REHEARSED: list[bool] = []  # not empty once preload() rehearsed in this process image


def preload() -> list[str]:
    """Import the state libraries before the sandbox is claimed; failures as text.

    Then capture and restore a small namespace once (in memory, nothing kept): the
    first pickling of a DataFrame in a process costs ~1 ms more than the next (lazy
    set-up), better spent before the claim. Once per process image: the forks of a
    zygote that rehearsed skip it (~8 ms of CPU per sandbox).
    """
    try:
        cloudpickle, lz4f = pystate._libraries()
    except pystate.StateUnavailable as exc:
        return [str(exc)]
    if _REHEARSED:
        return []
    sample: dict[str, Any] = {"n": 1, "text": "x", "items": [1.5, 2.5], "f": lambda: 0}
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        sample["frame"] = pandas.DataFrame({"x": [1.0, 2.0], "y": [1, 2]})
    buffer = io.BytesIO()
    sink = pystate._Sink(lz4f, 1 << 24, 1 << 24, buffer)
    pystate._dump(pystate._pickler(cloudpickle), {"namespace": sample, "modules": {}}, sink)
    _restore(memoryview(buffer.getvalue()), {}, 1 << 24)
    _REHEARSED.append(True)
    return []



class _CappedReader:
    """A file for the unpickler over an lz4 frame, decompressed as it is read.

    No ``readinto``: the unpickler then asks ``read(n)`` for a large object, and ``n``
    is checked against the cap before anything is decompressed for it.
    """

    def __init__(self, lz4f: Any, frame: memoryview, cap: int) -> None:
        self._decompressor = lz4f.LZ4FrameDecompressor()
        self._input: memoryview | bytes = frame
        self._buffer = bytearray()
        self._produced = 0
        self._cap = cap

    def _more(self, want: int) -> bool:
        if self._decompressor.eof:
            return False
        if self._decompressor.needs_input and not self._input:
            raise pystate.StateRefused("the state is truncated")
        chunk = self._decompressor.decompress(self._input, max_length=max(want, 65536))
        self._input = b""
        self._produced += len(chunk)
        if self._produced > self._cap:
            raise pystate.StateTooLarge(f"the state decompresses to more than {self._cap} bytes")
        self._buffer += chunk
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self._cap + 1
        if self._produced - len(self._buffer) + size > self._cap:
            raise pystate.StateTooLarge(f"the state decompresses to more than {self._cap} bytes")
        while len(self._buffer) < size and self._more(min(size - len(self._buffer),
                                                          _READ_CHUNK)):
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and self._more(65536):
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data


def _loader(cloudpickle: Any, reader: _CappedReader, namespace: dict[str, Any]) -> Any:
    make_function: Callable[..., Any] = cloudpickle.cloudpickle._make_function

    def rebind(code: Any, globals_: dict[str, Any], *rest: Any) -> Any:
        # Functions of the user's module see the session's namespace, not a copy.
        if globals_.get("__name__") == "__main__":
            globals_ = namespace
        return make_function(code, globals_, *rest)

    class _Loader(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("cloudpickle.cloudpickle", "_make_function"):
                return rebind
            return super().find_class(module, name)

    # Only ever here, inside the session's own sandbox, on the session's own state.
    return _Loader(reader).load()


def restore(blob: memoryview, namespace: dict[str, Any], max_raw: int) -> list[dict[str, str]]:
    """Fill ``namespace`` from ``blob``; on any failure it is left as it was."""
    if not len(blob):
        return []
    before = dict(namespace)
    try:
        return _restore(blob, namespace, max_raw)
    except Exception as exc:  # noqa: BLE001 - whatever the blob does, the run goes on without it
        namespace.clear()
        namespace.update(before)
        message = f"the session's saved variables could not be restored: {pystate._describe(exc)}"
        sys.stderr.write(f"[state] {message}\n")
        return [pystate._state_problem(message)]


def _restore(blob: memoryview, namespace: dict[str, Any], max_raw: int) -> list[dict[str, str]]:
    cloudpickle, lz4f = pystate._libraries()
    if blob[0] != pystate.FORMAT_VERSION:
        raise pystate.StateRefused(f"unknown state format version {blob[0]}")
    frame = blob[1:]
    if bytes(frame[:4]) != pystate.LZ4_MAGIC:
        raise pystate.StateRefused("the state is not an lz4 frame")
    declared = int(lz4f.get_frame_info(frame).get("content_size") or 0)
    if declared > max_raw:
        raise pystate.StateTooLarge(f"the state declares {declared} bytes, more than {max_raw}")
    payload = _loader(cloudpickle, _CappedReader(lz4f, frame, max_raw), namespace)
    if not (isinstance(payload, dict) and isinstance(payload.get("namespace"), dict)
            and isinstance(payload.get("modules"), dict)):
        raise pystate.StateRefused("the blob does not hold a namespace")
    problems: list[dict[str, str]] = []
    for alias, module_name in payload["modules"].items():
        if not (isinstance(alias, str) and isinstance(module_name, str)):
            continue
        try:
            namespace[alias] = sys.modules.get(module_name) or importlib.import_module(
                module_name)
        except ImportError as exc:
            error = f"could not be imported again: {pystate._describe(exc)}"
            problems.append({"name": alias[:200], "type": "module", "error": error[:500]})
    namespace.update({k: v for k, v in payload["namespace"].items() if isinstance(k, str)})
    namespace["__builtins__"] = builtins  # as in any __main__ (cloudpickle set its dict)
    return problems
