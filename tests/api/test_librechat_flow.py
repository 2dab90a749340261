"""The LibreChat conversation, replayed over real HTTP for both client generations.

Upload a CSV, run code on it that makes a matplotlib PNG, download the PNG, list
the session in every detail mode, probe freshness, delete, and see it gone.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

CSV = b"x,y\n1,2\n2,4\n3,9\n4,16\n"
PLOT = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/data.csv')
print(int(df['y'].sum()))
df.plot(x='x', y='y')
plt.savefig('/mnt/data/plot.png')
"""
ID = re.compile(r"[A-Za-z0-9_-]{21}")


def upload_legacy(client: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    response = client.post("/upload", files={"file": (name, data, "text/csv")},
                           data={"entity_id": "assistant_1"}, headers={"User-Id": "user-1"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def upload_current(client: httpx.Client, name: str, data: bytes,
                   read_only: bool = False) -> dict[str, Any]:
    response = client.post("/upload", files={"file": (name, data, "text/csv")},
                           data={"kind": "user", "id": "resource-1", "version": "3",
                                 "read_only": "true" if read_only else "false"},
                           headers={"User-Id": "user-1"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_full_conversation(client: httpx.Client, generation: str) -> None:
    # 1. upload
    if generation == "legacy":
        up = upload_legacy(client, "data.csv", CSV)
    else:
        up = upload_current(client, "data.csv", CSV)
    assert up["message"] == "success"
    upload_session = str(up["session_id"])
    assert up["storage_session_id"] == upload_session and ID.fullmatch(upload_session)
    [uploaded] = up["files"]
    file_id = uploaded["fileId"]
    assert uploaded["filename"] == "data.csv" and ID.fullmatch(file_id)

    # 2. exec with a file reference in the generation's own shape
    if generation == "legacy":
        ref = {"id": file_id, "session_id": upload_session, "name": "data.csv"}
    else:
        ref = {"id": file_id, "resource_id": "resource-1", "name": "data.csv",
               "storage_session_id": upload_session, "kind": "user", "version": 3}
    result = client.post("/exec", json={"lang": "py", "code": PLOT, "files": [ref],
                                        "user_id": "user-1"}).json()
    assert result["status"] == "ok", result
    assert result["stdout"] == "31\n"
    exec_session = result["session_id"]
    assert exec_session != upload_session, "a file reference never joins the upload session"
    names = {f["name"]: f for f in result["files"]}
    assert set(names) == {"plot.png"}, "the unchanged input is not returned"
    plot = names["plot.png"]
    assert plot["path"] == "/mnt/data/plot.png"
    assert plot["storage_session_id"] == exec_session and plot["inherited"] is False
    assert "modified_from" not in plot

    # 3. download at once: a real PNG
    download = client.get(f"/download/{exec_session}/{plot['id']}",
                          params={"kind": "user", "entity_id": "x"})
    assert download.status_code == 200
    assert download.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert download.headers["content-type"] == "image/png"
    assert 'filename="plot.png"' in download.headers["content-disposition"]
    assert int(download.headers["content-length"]) == len(download.content) == plot["size"]
    # the uploaded bytes come back unchanged too
    original = client.get(f"/download/{upload_session}/{file_id}")
    assert original.content == CSV

    # 4. list in every detail mode, with the exact name shapes
    simple = client.get(f"/files/{exec_session}").json()
    assert simple == [f"{exec_session}/{plot['id']}"]
    assert client.get(f"/files/{exec_session}", params={"detail": "simple"}).json() == simple
    summary = client.get(f"/files/{exec_session}", params={"detail": "summary"}).json()
    assert summary[0]["name"] == f"{exec_session}/{plot['id']}"
    assert summary[0]["size"] == plot["size"] and summary[0]["etag"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary[0]["lastModified"])
    full = client.get(f"/files/{exec_session}", params={"detail": "full"}).json()
    assert full[0]["metadata"] == {"original-filename": "plot.png", "content-type": "image/png"}
    normalized = client.get(f"/files/{exec_session}", params={"detail": "normalized"}).json()
    assert normalized == [{"id": plot["id"], "name": "plot.png",
                           "storage_session_id": exec_session, "size": plot["size"],
                           "contentType": "image/png",
                           "lastModified": summary[0]["lastModified"]}]
    assert client.get(f"/files/{exec_session}", params={"detail": "bogus"}).status_code == 400

    # 5. freshness probe
    probe = client.get(f"/sessions/{upload_session}/objects/{file_id}")
    assert probe.status_code == 200
    info = probe.json()
    assert info["size"] == len(CSV) and info["name"] == "data.csv" and info["etag"]

    # 6. delete (both paths) and gone
    assert client.delete(f"/files/{exec_session}/{plot['id']}").status_code == 200
    assert client.delete(f"/sessions/{upload_session}/objects/{file_id}").status_code == 200
    for session, fid in ((exec_session, plot["id"]), (upload_session, file_id)):
        assert client.get(f"/download/{session}/{fid}").status_code == 404
        assert client.get(f"/sessions/{session}/objects/{fid}").status_code == 404
        assert client.delete(f"/files/{session}/{fid}").status_code == 404
    assert client.get(f"/files/{exec_session}").json() == []


def test_session_files_follow_the_session(client: httpx.Client) -> None:
    first = client.post("/exec", json={"lang": "bash",
                                       "code": "echo one > /mnt/data/notes.txt"}).json()
    session = first["session_id"]
    assert [f["name"] for f in first["files"]] == ["notes.txt"]
    second = client.post("/exec", json={"lang": "py", "session_id": session, "code":
                                        "print(open('/mnt/data/notes.txt').read().strip())\n"
                                        "open('/mnt/data/notes.txt', 'a').write('two\\n')"}).json()
    assert second["stdout"] == "one\n"
    [changed] = second["files"]
    assert changed["name"] == "notes.txt"
    assert changed["modified_from"] == {"id": first["files"][0]["id"],
                                        "storage_session_id": session}
    assert changed["id"] != first["files"][0]["id"]
    # the original object is never overwritten
    original = client.get(f"/download/{session}/{first['files'][0]['id']}").content
    assert original == b"one\n"
    third = client.post("/exec", json={"lang": "bash", "session_id": session,
                                       "code": "cat /mnt/data/notes.txt"}).json()
    assert third["stdout"] == "one\ntwo\n", "the newest version of a name is staged"
    assert third["files"] == []


def test_read_only_input_changed_is_echoed_unchanged(client: httpx.Client) -> None:
    """``read_only`` is honoured as the client documents ``inherited``: the edit is
    dropped and the original comes back as an unchanged passthrough."""
    up = upload_current(client, "data.csv", CSV, read_only=True)
    [uploaded] = up["files"]
    ref = {"id": uploaded["fileId"], "storage_session_id": up["session_id"], "name": "data.csv"}
    listed = client.get(f"/files/{up['session_id']}", params={"detail": "normalized"}).json()
    assert listed[0]["read_only"] is True
    result = client.post("/exec", json={"lang": "bash", "files": [ref],
                                        "code": "echo '5,25' >> /mnt/data/data.csv"}).json()
    [echoed] = result["files"]
    assert echoed["inherited"] is True and "modified_from" not in echoed
    assert (echoed["id"], echoed["storage_session_id"]) == (uploaded["fileId"],
                                                            up["session_id"])
    assert client.get(f"/download/{up['session_id']}/{uploaded['fileId']}").content == CSV
    assert client.get(f"/files/{result['session_id']}").json() == []  # nothing stored


def test_outputs_in_subdirectories_and_binary_content(client: httpx.Client) -> None:
    code = ("import os\nos.makedirs('/mnt/data/out/deep', exist_ok=True)\n"
            "open('/mnt/data/out/deep/b.bin', 'wb').write(bytes(range(256)) * 10)\n")
    result = client.post("/exec", json={"lang": "py", "code": code}).json()
    [entry] = result["files"]
    assert entry["name"] == "out/deep/b.bin" and entry["path"] == "/mnt/data/out/deep/b.bin"
    body = client.get(f"/download/{result['session_id']}/{entry['id']}")
    assert body.content == bytes(range(256)) * 10
    assert 'filename="b.bin"' in body.headers["content-disposition"]
    again = client.post("/exec", json={"lang": "bash", "session_id": result["session_id"],
                                       "code": "sha256sum /mnt/data/out/deep/b.bin"}).json()
    assert again["stdout"].split()[0] == hashlib.sha256(bytes(range(256)) * 10).hexdigest()


def test_unicode_names_download_with_both_filename_forms(client: httpx.Client) -> None:
    up = client.post("/upload", files={"file": ("résumé 2024.txt", b"hi", "text/plain")}).json()
    [item] = up["files"]
    response = client.get(f"/download/{up['session_id']}/{item['fileId']}")
    disposition = response.headers["content-disposition"]
    assert 'filename="r_sum_ 2024.txt"' in disposition
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202024.txt" in disposition
