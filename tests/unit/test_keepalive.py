"""The keep-alive answer (``app/domain/exec/keepalive.py``) on both sides of its
interval: with ``EXEC_KEEPALIVE_INTERVAL=0`` a long run is one plain JSON answer, sent
when the run ends; with an interval the same run streams whitespace first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from litestar import Response
from litestar.response import Stream

from app.domain.exec.keepalive import KEEPALIVE_AFTER, answer_with_keepalive


async def _long_run(acquired: Callable[[], None]) -> dict[str, str]:
    acquired()  # the sandbox is claimed at once; the program runs past KEEPALIVE_AFTER
    await asyncio.sleep(KEEPALIVE_AFTER + 0.3)
    return {"status": "ok"}


def test_no_interval_answers_a_long_run_with_plain_json() -> None:
    answer = asyncio.run(answer_with_keepalive(_long_run, interval=0, headers={"X-A": "1"}))
    assert not isinstance(answer, Stream)
    assert isinstance(answer, Response) and answer.content == {"status": "ok"}
    assert answer.headers["X-A"] == "1"


def test_an_interval_answers_the_same_run_with_whitespace_first() -> None:
    answer = asyncio.run(answer_with_keepalive(_long_run, interval=1, headers={}))
    assert isinstance(answer, Stream)
