"""``deleted_files``: the inputs the code removed from ``/mnt/data``, on every exec route."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest

from app.domain.exec.staging import LISTING_CAP
from sidecar.files import WorkDir
from tests.api.test_librechat_flow import upload_current
from tests.stream.helpers import stream_exec

CSV = b"x\n1\n"


def upload(client: httpx.Client, name: str, read_only: bool = False) -> dict[str, Any]:
    up = upload_current(client, name, CSV, read_only=read_only)
    [uploaded] = up["files"]
    return {"id": uploaded["fileId"], "storage_session_id": up["session_id"], "name": name}


def test_a_removed_input_is_named_and_kept_ones_are_not(client: httpx.Client) -> None:
    gone, kept, nested = (upload(client, "gone.csv"), upload(client, "kept.csv"),
                          upload(client, "dir/nested.csv"))
    result = client.post("/exec", json={
        "lang": "bash", "files": [gone, kept, nested],
        "code": "rm /mnt/data/gone.csv /mnt/data/dir/nested.csv; ls /mnt/data"}).json()
    assert result["stdout"] == "dir\nkept.csv\n"
    assert sorted(result["deleted_files"]) == ["dir/nested.csv", "gone.csv"]
    assert result["files"] == []
    # the stored upload itself is untouched
    assert client.get(f"/download/{gone['storage_session_id']}/{gone['id']}").content == CSV


def test_nothing_removed_is_an_empty_list(client: httpx.Client) -> None:
    ref = upload(client, "data.csv")
    result = client.post("/exec", json={"lang": "py", "files": [ref],
                                        "code": "print(open('/mnt/data/data.csv').read())"})
    assert result.json()["deleted_files"] == []
    plain = client.post("/exec", json={"lang": "py", "code": "print(1)"}).json()
    assert plain["deleted_files"] == []


def test_an_input_replaced_by_a_directory_or_a_link_is_removed(client: httpx.Client) -> None:
    first, second = upload(client, "a.txt"), upload(client, "b.txt")
    code = ("cd /mnt/data && rm a.txt && mkdir a.txt && echo x > a.txt/inner "
            "&& rm b.txt && ln -s /etc/hostname b.txt")
    result = client.post("/exec", json={"lang": "bash", "files": [first, second],
                                        "code": code}).json()
    assert result["status"] == "ok", result
    assert sorted(result["deleted_files"]) == ["a.txt", "b.txt"]
    assert [f["name"] for f in result["files"]] == ["a.txt/inner"]


def test_a_removed_read_only_input_is_echoed_not_deleted(client: httpx.Client) -> None:
    ref = upload(client, "skill.md", read_only=True)
    result = client.post("/exec", json={"lang": "bash", "files": [ref],
                                        "code": "rm /mnt/data/skill.md"}).json()
    assert result["deleted_files"] == []
    [echoed] = result["files"]
    assert echoed["inherited"] is True and echoed["id"] == ref["id"]


def test_a_file_the_session_made_stays_gone_once_deleted(client: httpx.Client) -> None:
    made = client.post("/exec", json={"lang": "bash",
                                      "code": "echo v1 > /mnt/data/out.txt"}).json()
    session = made["session_id"]
    [out] = made["files"]
    changed = client.post("/exec", json={"lang": "bash", "session_id": session,
                                         "code": "echo v2 > /mnt/data/out.txt"}).json()
    [newer] = changed["files"]
    assert newer["modified_from"]["id"] == out["id"]
    removed = client.post("/exec", json={"lang": "bash", "session_id": session,
                                         "code": "rm /mnt/data/out.txt"}).json()
    assert removed["deleted_files"] == ["out.txt"]
    later = client.post("/exec", json={"lang": "bash", "session_id": session,
                                       "code": "ls /mnt/data; echo end"}).json()
    assert later["stdout"] == "end\n"  # neither version is placed again
    # still stored: downloadable, and placed when referenced explicitly
    assert client.get(f"/download/{session}/{newer['id']}").content == b"v2\n"
    ref = {"id": newer["id"], "storage_session_id": session, "name": "out.txt"}
    again = client.post("/exec", json={"lang": "bash", "session_id": session, "files": [ref],
                                       "code": "cat /mnt/data/out.txt"}).json()
    assert again["stdout"] == "v2\n"


def test_the_stream_and_programmatic_answers_carry_it(client: httpx.Client) -> None:
    ref = upload(client, "data.csv")
    streamed = stream_exec(client, {"lang": "bash", "files": [ref],
                                    "code": "rm /mnt/data/data.csv"})
    assert streamed.result["deleted_files"] == ["data.csv"]
    ref = upload(client, "data.csv")
    done = client.post("/exec/programmatic", json={
        "lang": "bash", "files": [ref], "tools": [{"name": "noop"}],
        "code": "rm /mnt/data/data.csv; echo done"}).json()
    assert done["status"] == "completed", done
    assert done["deleted_files"] == ["data.csv"]


def test_the_listing_cap_is_the_executors() -> None:
    assert inspect.signature(WorkDir).parameters["max_files"].default == LISTING_CAP


@pytest.mark.parametrize(("made", "reported"), [(LISTING_CAP - 1, True), (LISTING_CAP, False)])
def test_a_listing_cut_at_its_cap_reports_nothing(client: httpx.Client, made: int,
                                                  reported: bool) -> None:
    ref = upload(client, "data.csv")
    code = (f"import os\nos.remove('/mnt/data/data.csv')\nfor i in range({made}):\n"
            "    open(f'/mnt/data/f{i:04}.txt', 'w').close()\n")
    result = client.post("/exec", json={"lang": "py", "files": [ref], "code": code}).json()
    assert result["status"] == "ok", result
    assert result["deleted_files"] == (["data.csv"] if reported else [])
