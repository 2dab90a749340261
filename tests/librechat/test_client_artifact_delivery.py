"""The real ``@librechat/agents`` code tool reads our ``artifact_delivery``: it tells the
model which outputs are missing and not to rerun code that already ran."""

from __future__ import annotations

from tests.api.test_artifact_delivery import FailingPuts, failing_api
from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient

__all__ = ["failing_api"]  # the fixture, shared with the API tests

WARNING = ("Artifact delivery warning: 1 of 2 generated files could not be persisted. Do not "
           "assume missing files are available to later calls or downloadable. The code "
           "itself ran; do not rerun automatically because it may have had side effects.")


def test_the_client_warns_the_model(failing_api: tuple[RunningApp, FailingPuts],
                                    librechat: LibreChatClient) -> None:
    app, store = failing_api
    store.failing = {"bad.txt"}
    answer = librechat.run("exec", base_url=app.base_url, api_key=API_KEY, args={
        "lang": "bash",
        "code": "echo out; echo good > /mnt/data/good.txt; echo bad > /mnt/data/bad.txt"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\nout\n"), answer
    assert WARNING in answer["content"]
    artifact = answer["artifact"]
    assert artifact["artifact_delivery"] == {"code": "artifact_delivery_failed",
                                             "status": "partial", "attempted": 2,
                                             "delivered": 1, "failed": 1}
    assert [f["name"] for f in artifact["files"]] == ["good.txt"]
