"""Inputs that do not fit in the sandbox's work dir are the request's fault: a 413 that
says so, never a 503 "try again" that LibreChat would retry for ever. One file over the
work dir's size is refused by the executor before it is written (413), several that
fill it when placed together meet a full work dir (507); both sides of the limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, serving, start_app

KIB = 1024


@pytest.fixture(scope="module")
def small_workdir(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                  valkey_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(tmp_path_factory.mktemp("small-workdir"), runtime_dir,
                             valkey_url, pool_sizes={}, sandbox_workdir_mb=1,
                             max_upload_size=3 * 1024 * KIB)
    for running in serving(start_app(settings)):
        with running.client() as client:
            yield client


def _upload(client: httpx.Client, name: str, size: int) -> dict[str, Any]:
    response = client.post("/upload", files={"file": (name, b"x" * size, "text/plain")})
    assert response.status_code == 200, response.text
    body = response.json()
    return {"id": body["files"][0]["fileId"], "storage_session_id": body["session_id"],
            "name": name}


@pytest.mark.parametrize("sizes", [[1536 * KIB], [600 * KIB, 600 * KIB]],
                         ids=["one-too-big", "together-too-big"])
def test_inputs_over_the_work_dir_are_a_413(small_workdir: httpx.Client,
                                            sizes: list[int]) -> None:
    files = [_upload(small_workdir, f"f{index}.bin", size) for index, size in enumerate(sizes)]
    response = small_workdir.post("/exec", json={"lang": "bash", "files": files,
                                                 "code": "echo never"})
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "payload_too_large"
    assert "do not fit in the sandbox's work dir" in body["message"]
    # and the service goes on: inputs that fit run
    fits = _upload(small_workdir, "fits.bin", 400 * KIB)
    ok = small_workdir.post("/exec", json={"lang": "bash", "files": [fits],
                                           "code": "wc -c < /mnt/data/fits.bin"})
    assert ok.status_code == 200 and ok.json()["stdout"] == f"{400 * KIB}\n", ok.text
