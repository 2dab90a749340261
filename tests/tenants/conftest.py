"""Fixtures of the tenant tests: ``run``, a coroutine run to its end on a fresh loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()
