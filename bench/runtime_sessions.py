"""Runtime sessions (the ``stateful`` profile) in the benchmark: a reused kept sandbox's
``print(1)`` against a default one's, and what a checkpoint costs per MB changed.

Measured on the same service as the default rows: one runtime session is created,
then ``print(1)`` runs in it again and again (``runtime_status`` = ``reused``: a new
process in the kept sandbox, no claim, no inputs); then programs that each rewrite a
file of 1 and 8 MB in ``/mnt/data`` measure the ``checkpoint`` phase from ``/metrics``
(the manifest of the workspace; a changed file that is also the run's output is stored
once, by ``stage_out``, and referred to) beside the ``stage_out`` phase that stores it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from . import figures
from .load import Connection, percentile
from .report import Row, ms
from .service import Process

__all__ = ["rows"]

_P50 = 0.50
_HEADERS = {**figures.HEADERS, "X-CodeAPI-Expected-Profile": "stateful"}
_WRITE = ("import os\nwith open('/mnt/data/blob.bin', 'wb') as f:\n"
          "    f.write(os.urandom({size} * 1024 * 1024))\nprint('ok')")


async def _calls(process: Process, hint: str,
                 codes: list[str]) -> list[tuple[float, dict[str, Any]]]:
    """Each code in turn in the runtime session ``hint``: (seconds, answer)."""
    connection = Connection(process.port, _HEADERS)
    answers: list[tuple[float, dict[str, Any]]] = []
    try:
        for code in codes:
            began = time.perf_counter()
            status, body = await connection.post_json("/exec", {
                "lang": "py", "code": code, "runtime_session_hint": hint})
            answer = orjson.loads(body) if status == 200 else {"status": f"HTTP {status}"}
            answers.append((time.perf_counter() - began, answer))
    finally:
        await connection.close()
    return answers


def rows(process: Process, default_p50: float, quick: bool) -> list[Row]:
    samples = 30 if quick else 100
    calls = asyncio.run(_calls(process, "bench-print", ["print(1)"] * (samples + 1)))
    statuses = {answer.get("runtime_status") for _, answer in calls[1:]}
    reused = [seconds for seconds, answer in calls[1:]
              if answer.get("runtime_status") == "reused" and answer.get("status") == "ok"]
    out = [Row(f"runtime session: `print(1)` in a reused kept sandbox, P50 ({len(reused)} of "
               f"{samples} reused; statuses {sorted(map(str, statuses))})",
               ms(percentile(reused, _P50)), f"default profile {ms(default_p50)}",
               f"{percentile(reused, _P50) / default_p50:.2f}x")]
    for size in (1, 8):
        before = figures.scrape(process)
        writes = asyncio.run(_calls(process, f"bench-checkpoint-{size}",
                                    [_WRITE.format(size=size)] * (3 if quick else 6)))
        means = figures.phase_means(before, figures.scrape(process))
        ok = sum(1 for _, answer in writes if answer.get("status") == "ok")
        checkpoint = means.get("checkpoint", float("nan"))
        stored = means.get("stage_out", float("nan"))
        out.append(Row(f"runtime session: checkpoint of {size} MB changed, mean of {ok} "
                       f"(the changed file is stored once, as the run's output, and the "
                       f"manifest refers to it; /exec round trip P50 "
                       f"{ms(percentile([s for s, _ in writes], _P50))})",
                       ms(checkpoint), f"storing the output {ms(stored)}",
                       f"{(checkpoint + stored) / size * 1000:.1f} ms/MB in all"))
    return out
