"""The real ``@librechat/agents`` ToolNode applies our ``deleted_files``: a deleted input
leaves the conversation's code session and is not injected again."""

from __future__ import annotations

import httpx

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient


def test_a_deleted_input_leaves_the_clients_session(api: RunningApp, client: httpx.Client,
                                                    librechat: LibreChatClient) -> None:
    up = client.post("/upload", files={"file": ("data.csv", b"x\n1\n", "text/csv")},
                     data={"kind": "user", "id": "resource-1"}).json()
    session_id = up["session_id"]
    [uploaded] = up["files"]
    primed = {"session_id": session_id, "files": [
        {"id": uploaded["fileId"], "name": "data.csv", "storage_session_id": session_id}]}
    answer = librechat.run("toolnode", base_url=api.base_url, api_key=API_KEY,
                           session=primed, calls=[
        {"lang": "bash", "code": "cat /mnt/data/data.csv; echo note > /mnt/data/note.txt"},
        {"lang": "bash", "code": "rm /mnt/data/data.csv; ls /mnt/data"},
        {"lang": "bash", "code": "ls /mnt/data"}])
    first, second, third = answer["results"]
    assert first["content"].startswith("stdout:\nx\n1\n"), first
    names = [[f["name"] for f in s["files"]] for s in answer["sessions"]]
    assert sorted(names[0]) == ["data.csv", "note.txt"]
    assert second["artifact"]["deleted_files"] == ["data.csv"], second
    assert names[1] == ["note.txt"]  # the client's own bookkeeping dropped it
    assert third["content"].split("\n")[:2] == ["stdout:", "note.txt"], third
    assert names[2] == ["note.txt"]
