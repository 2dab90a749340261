"""Zygote calibration: the pages a sandbox writes while it serves a request.

Once per zygote, before the pools fill, one sandbox started with ``--calibrate``
runs ``print(1)`` (with the state capture every Python execution asks for) and
reports which pages its executor and its warm worker wrote while serving it
(``sidecar/prefault.py``). The zygote then copies those pages into every later
sandbox right after its fork, before the sandbox is claimed: a warm request takes
no copy-on-write faults for them (about a millisecond of a warm ``print(1)``).
Best effort: without a calibration, sandboxes work the same, a little slower.
"""

from __future__ import annotations

import logging

from ...executor import ExecutorError, StateCapture
from .sandbox import LocalSandbox, SandboxStartError

__all__ = ["calibrate"]

logger = logging.getLogger(__name__)

#: What the calibration runs: the smallest request, the common path of every other.
CALIBRATION_CODE = "print(1)"


async def calibrate(sandbox: LocalSandbox,
                    capture: StateCapture | None) -> dict[str, list[list[int]]] | None:
    """Start ``sandbox`` (made with ``calibrate=True``), run the calibration code,
    return its pages (None, logged, when that fails); the sandbox is destroyed."""
    try:
        await sandbox.start()
        result = await sandbox.executor.execute(
            lang="py", code=CALIBRATION_CODE, args=[], timeout=30, request_id="calibration",
            transport_timeout=60, capture=capture)
        if result.status != "ok" or result.stdout != "1\n":
            raise ExecutorError(f"the calibration run ended {result.status}: "
                                f"{result.stderr[-500:]}")
        pages = await sandbox.executor.calibration()
    except (SandboxStartError, ExecutorError) as exc:
        logger.warning("sandbox calibration failed: sandboxes copy their pages on demand",
                       extra={"error": str(exc)})
        return None
    finally:
        await sandbox.destroy()
    logger.info("sandbox calibration done", extra={
        "executor_pages": sum(count for _, count in pages["executor"]),
        "worker_pages": sum(count for _, count in pages["worker"])})
    return pages
