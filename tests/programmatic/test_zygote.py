"""Programmatic tool calling in sandboxes of the zygote factory, whose warm worker is
forked rather than executed (``SANDBOX_FACTORY=zygote``): the tool channel reaches it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.backends.local import LocalBackend
from app.backends.local.zygote import unavailable_reason
from tests.conftest import RunningApp, make_settings, start_app, stop_app

from .helpers import drive


@pytest.fixture(scope="module")
def zygote_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
               valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path_factory.mktemp("ptc-zygote"), runtime_dir, valkey_url,
                             sandbox_factory="zygote", pool_sizes={"py": 1})
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def test_rounds_in_a_zygote_sandbox(zygote_api: RunningApp) -> None:
    backend = zygote_api.app.state.backend
    assert isinstance(backend, LocalBackend)
    if unavailable_reason(backend._cgroups) is not None:
        pytest.skip(f"zygote unavailable: {unavailable_reason(backend._cgroups)}")
    deadline = time.monotonic() + 60
    while zygote_api.run(backend.health())["sandbox_factory"] != "zygote":
        assert time.monotonic() < deadline, "the zygote did not start"
        time.sleep(0.1)
    with zygote_api.client() as client:
        code = ("a, b = await asyncio.gather(add(a=1, b=1), mul(a=2, b=3))\n"
                "c = await add(a=a, b=b)\nprint(a, b, c)")
        answer, rounds = drive(client, {"code": code})
        assert answer["status"] == "completed", answer
        assert answer["stdout"] == "2 6 8\n" and [len(r) for r in rounds] == [2, 1]
        plain = client.post("/exec", json={"lang": "py", "code": "print(1)"}).json()
        assert plain["stdout"] == "1\n", "an ordinary run still works"
