"""Programmatic tool calling in sandboxes of the zygote factory, whose warm worker is
forked rather than executed (``SANDBOX_FACTORY=zygote``): the tool channel reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningApp, make_settings, serving, start_app, wait_for_factory

from .helpers import drive


@pytest.fixture(scope="module")
def zygote_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
               valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path_factory.mktemp("ptc-zygote"), runtime_dir, valkey_url,
                             sandbox_factory="zygote", pool_sizes={"py": 1})
    yield from serving(start_app(settings))


def test_rounds_in_a_zygote_sandbox(zygote_api: RunningApp) -> None:
    wait_for_factory(zygote_api, "zygote")
    with zygote_api.client() as client:
        code = ("a, b = await asyncio.gather(add(a=1, b=1), mul(a=2, b=3))\n"
                "c = await add(a=a, b=b)\nprint(a, b, c)")
        answer, rounds = drive(client, {"code": code})
        assert answer["status"] == "completed", answer
        assert answer["stdout"] == "2 6 8\n" and [len(r) for r in rounds] == [2, 1]
        plain = client.post("/exec", json={"lang": "py", "code": "print(1)"}).json()
        assert plain["stdout"] == "1\n", "an ordinary run still works"
