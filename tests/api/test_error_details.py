"""A store's failure is answered in our words, not its own: the object store's message
(a host path, an endpoint, a Rust debug dump) goes to the log, never to the client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage import FileStore, create_object_store
from tests.conftest import RunningApp, make_settings, serving, start_app


@pytest.fixture(scope="module")
def broken_store_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                     valkey_url: str) -> Iterator[tuple[RunningApp, Path]]:
    data = tmp_path_factory.mktemp("broken-store")
    for running in serving(start_app(make_settings(data, runtime_dir, valkey_url,
                                                   pool_sizes={}))):
        # A local store whose root is a regular file: every write fails in the store,
        # with the host path in its message.
        root = data / "not-a-directory"
        store = create_object_store(None, root)
        root.rmdir()
        root.write_text("x")
        running.app.state.file_service.objects = FileStore(store)
        yield running, root


def test_a_store_failure_is_answered_without_the_stores_words(
        broken_store_api: tuple[RunningApp, Path], caplog: pytest.LogCaptureFixture) -> None:
    app, root = broken_store_api
    with caplog.at_level(logging.WARNING), app.client() as http:
        response = http.post("/upload", files={"file": ("a.txt", b"x", "text/plain")})
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "storage_unavailable"
    assert body["message"] == "object store write failed"
    assert str(root) not in response.text and "Debug" not in response.text
    assert response.headers["retry-after"] == "2"
    # the operator still sees what happened
    assert any(str(root) in str(getattr(record, "detail", "")) for record in caplog.records)


def test_a_client_cannot_tell_the_stores_path_from_an_exec(
        broken_store_api: tuple[RunningApp, Path]) -> None:
    """An execution's outputs that cannot be stored are reported without the detail."""
    app, root = broken_store_api
    with app.client() as http:
        result = http.post("/exec", json={"lang": "bash",
                                          "code": "echo hi > /mnt/data/out.txt"})
    assert result.status_code == 200, result.text
    answer = result.json()
    assert answer["artifact_delivery"]["status"] == "failed"
    assert str(root) not in result.text and "Debug" not in result.text
