"""A stored file whose bytes are gone (metadata left behind by a DELETE that raced a
metadata update and then failed, or a bucket's lifecycle rule): it is a deleted file to
every route, never a 503 for the session's later runs, and what was left of it is
removed (with its charge given back) the first time it is met. Bytes missing from a
file stored moments ago are a store not caught up yet (a 503), never a loss."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_librechat_flow import upload_current
from tests.conftest import RunningApp


def upload(client: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    up = upload_current(client, name, data)
    [uploaded] = up["files"]
    return {"id": uploaded["fileId"], "storage_session_id": up["session_id"], "name": name}


def lose_bytes(api: RunningApp, ref: dict[str, Any], *, stored_ago: float = 3600) -> Path:
    """Remove the file's bytes from the local object store, leaving its metadata, which
    now says the file was stored ``stored_ago`` seconds ago; the metadata's path."""
    base: Path = api.settings.data_dir / "objects" / "default" / ref["storage_session_id"]
    (base / ref["id"]).unlink()
    meta = base / f"{ref['id']}.json"
    fields = json.loads(meta.read_bytes())
    fields["last_modified"] = time.time() - stored_ago
    meta.write_text(json.dumps(fields))
    return meta


def listed(client: httpx.Client, session_id: str) -> list[str]:
    response = client.get(f"/files/{session_id}", params={"detail": "normalized"})
    assert response.status_code == 200, response.text
    return sorted(entry["name"] for entry in response.json())


def test_a_download_of_it_is_a_404_and_its_metadata_goes(api: RunningApp,
                                                          client: httpx.Client) -> None:
    ref = upload(client, "gone.txt", b"lost")
    meta = lose_bytes(api, ref)
    response = client.get(f"/download/{ref['storage_session_id']}/{ref['id']}")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert not meta.exists()
    assert listed(client, ref["storage_session_id"]) == []
    again = client.get(f"/download/{ref['storage_session_id']}/{ref['id']}")
    assert again.status_code == 404


@pytest.mark.parametrize("referenced", [True, False], ids=["in-files", "session-own"])
def test_a_run_leaves_it_out_and_names_it_deleted(api: RunningApp, client: httpx.Client,
                                                   referenced: bool) -> None:
    kept, gone = upload(client, "kept.txt", b"kept"), upload(client, "gone.txt", b"lost")
    if not referenced:  # both stored in one session, found as the session's own files
        second = client.post("/exec", json={
            "lang": "bash", "files": [gone],
            "code": "cd /mnt/data && mv gone.txt copy.txt && echo k > kept.txt"}).json()
        assert second["status"] == "ok", second
        session = second["session_id"]
        outputs = {entry["name"]: entry["id"] for entry in second["files"]}
        assert sorted(outputs) == ["copy.txt", "kept.txt"]
        gone = {"id": outputs["copy.txt"], "storage_session_id": session, "name": "copy.txt"}
    meta = lose_bytes(api, gone)
    body: dict[str, Any] = {"lang": "bash", "code": "ls /mnt/data"}
    if referenced:
        body["files"] = [kept, gone]
    else:
        body["session_id"] = session
    result = client.post("/exec", json=body)
    assert result.status_code == 200, result.text
    answer = result.json()
    assert answer["status"] == "ok"
    assert gone["name"] not in answer["stdout"].split() and "kept.txt" in answer["stdout"]
    assert answer["deleted_files"] == [gone["name"]]
    assert not meta.exists()
    if not referenced:
        assert listed(client, session) == ["kept.txt"]
        after = client.post("/exec", json={"lang": "bash", "session_id": session,
                                           "code": "ls /mnt/data"}).json()
        assert after["status"] == "ok" and "copy.txt" not in after["stdout"]
    else:  # a later reference to it is one to a file that does not exist
        again = client.post("/exec", json={"lang": "bash", "files": [gone], "code": "true"})
        assert again.status_code == 404


def test_a_read_only_input_gone_is_deleted_not_echoed(api: RunningApp,
                                                      client: httpx.Client) -> None:
    up = upload_current(client, "skill.md", b"how to", read_only=True)
    ref = {"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"],
           "name": "skill.md"}
    lose_bytes(api, ref)
    answer = client.post("/exec", json={"lang": "bash", "files": [ref],
                                        "code": "ls /mnt/data"}).json()
    assert answer["status"] == "ok" and answer["stdout"] == ""
    assert answer["deleted_files"] == ["skill.md"] and answer["files"] == []


def test_bytes_missing_from_a_file_just_stored_are_a_503_and_nothing_is_removed(
        api: RunningApp, client: httpx.Client) -> None:
    ref = upload(client, "fresh.txt", b"replicating")
    meta = lose_bytes(api, ref, stored_ago=5)
    download = client.get(f"/download/{ref['storage_session_id']}/{ref['id']}")
    assert download.status_code == 503 and download.json()["error"] == "storage_unavailable"
    run = client.post("/exec", json={"lang": "bash", "files": [ref], "code": "true"})
    assert run.status_code == 503
    assert meta.exists()
    assert listed(client, ref["storage_session_id"]) == ["fresh.txt"]
