"""``artifact_delivery``: outputs of code that ran but could not be stored are reported
in a 200 answer (stdout intact), never a 5xx.

The fault is injected at the storage seam: the app's ``FileStore`` (a real local
directory store) is swapped for one over the same directory whose ``put`` fails for
the names a test chooses, as an object store failing on one object would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage import FileMeta, FileStore, StorageUnavailable, create_object_store
from tests.conftest import RunningApp, make_settings, start_app, stop_app
from tests.stream.helpers import stream_exec

__all__ = ["FailingPuts", "failing_api"]


class FailingPuts(FileStore):
    """The app's store, except that storing a file named in ``failing`` fails."""

    def __init__(self, root: Path) -> None:
        super().__init__(create_object_store(None, root))
        self.failing: set[str] = set()

    async def put(self, meta: FileMeta, source: Path) -> FileMeta:
        if meta.name in self.failing:
            raise StorageUnavailable("object store write failed: injected fault", retry_after=2)
        return await super().put(meta, source)


@pytest.fixture(scope="module")
def failing_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                valkey_url: str) -> Iterator[tuple[RunningApp, FailingPuts]]:
    data = tmp_path_factory.mktemp("delivery")
    running, server, thread = start_app(make_settings(data, runtime_dir, valkey_url))
    store = FailingPuts(data / "objects")  # where the app's own store keeps its files
    running.app.state.file_service.objects = store
    yield running, store
    stop_app(server, thread)


TWO_FILES = "echo out; echo good > /mnt/data/good.txt; echo bad > /mnt/data/bad.txt"


def test_one_output_failing_is_partial(failing_api: tuple[RunningApp, FailingPuts]) -> None:
    app, store = failing_api
    store.failing = {"bad.txt"}
    with app.client() as client:
        response = client.post("/exec", json={"lang": "bash", "code": TWO_FILES})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["stdout"] == "out\n" and body["status"] == "ok"
        assert body["artifact_delivery"] == {"code": "artifact_delivery_failed",
                                             "status": "partial", "attempted": 2,
                                             "delivered": 1, "failed": 1}
        [good] = body["files"]
        assert good["name"] == "good.txt"
        assert client.get(f"/download/{body['session_id']}/{good['id']}").content == b"good\n"
        assert body["skipped_files"] == [{"name": "bad.txt", "size": 4, "reason":
                                          "could not be stored: the storage failed"}]
        listed = client.get(f"/files/{body['session_id']}", params={"detail": "normalized"})
        assert [f["name"] for f in listed.json()] == ["good.txt"]


def test_every_output_failing_is_failed(failing_api: tuple[RunningApp, FailingPuts]) -> None:
    app, store = failing_api
    store.failing = {"good.txt", "bad.txt"}
    with app.client() as client:
        body = client.post("/exec", json={"lang": "bash", "code": TWO_FILES}).json()
    assert body["stdout"] == "out\n" and body["files"] == []
    assert body["artifact_delivery"] == {"code": "artifact_delivery_failed", "status": "failed",
                                         "attempted": 2, "delivered": 0, "failed": 2}


def test_no_failure_is_no_report(failing_api: tuple[RunningApp, FailingPuts]) -> None:
    app, store = failing_api
    store.failing = {"other.txt"}
    with app.client() as client:
        body = client.post("/exec", json={"lang": "bash", "code": TWO_FILES}).json()
        assert body["artifact_delivery"] is None and len(body["files"]) == 2
        # caps are policy, not a delivery failure
        many = client.post("/exec", json={"lang": "bash", "code": (
            "for i in 1 2 3 4 5 6 7; do echo $i > /mnt/data/f$i.txt; done")}).json()
    assert len(many["files"]) == 5 and len(many["skipped_files"]) == 2
    assert many["artifact_delivery"] is None


def test_stream_and_programmatic_report_it(failing_api: tuple[RunningApp, FailingPuts]) -> None:
    app, store = failing_api
    store.failing = {"bad.txt"}
    with app.client() as client:
        streamed = stream_exec(client, {"lang": "bash", "code": TWO_FILES})
        assert streamed.result["artifact_delivery"]["status"] == "partial"
        assert streamed.text("stdout") == "out\n"
        done = client.post("/exec/programmatic", json={
            "lang": "bash", "tools": [{"name": "noop"}], "code": TWO_FILES}).json()
    assert done["status"] == "completed" and done["stdout"] == "out\n", done
    assert done["artifact_delivery"] == {"code": "artifact_delivery_failed",
                                         "status": "partial", "attempted": 2,
                                         "delivered": 1, "failed": 1}
