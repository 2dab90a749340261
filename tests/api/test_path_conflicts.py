"""Inputs no work dir can hold together: a file ``a`` and a file ``a/b.txt``.

Each name is valid on its own, but ``a`` cannot be a file and a directory at once.
An upload that would put both in one session is refused (400, naming both); when a
session holds both anyway (the code replaced its read-only file ``a`` by a directory, or the
request's references bring them together), the newer file is placed, the older one
is listed in ``skipped_files``, and the run goes on -- never a 503 for good.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from app.domain.files.service import conflicting
from app.ids import new_id
from app.storage import FileMeta
from tests.conftest import RunningApp


def _upload(client: httpx.Client, name: str, data: bytes = b"x",
            **fields: str) -> httpx.Response:
    return client.post("/upload", data=fields,
                       files=[("file", (name, data, "application/octet-stream"))])


@pytest.mark.parametrize(("path", "names", "expected"), [
    ("a", ["a/b.txt"], "a/b.txt"),
    ("a/b.txt", ["x", "a"], "a"),
    ("a/b/c.txt", ["a/b"], "a/b"),
    ("a", ["a"], None),            # the same name: the newer replaces it
    ("a", ["ab/c.txt", "a.txt"], None),  # a string prefix is not a directory prefix
    ("a/b.txt", ["a/c.txt"], None),
])
def test_what_conflicts(path: str, names: list[str], expected: str | None) -> None:
    assert conflicting(path, names) == expected


@pytest.mark.attack("files")
def test_an_upload_conflicting_with_the_session_is_refused(client: httpx.Client) -> None:
    first = _upload(client, "a")
    assert first.status_code == 200
    session = first.json()["session_id"]
    under = _upload(client, "a/b.txt", session_id=session)
    assert under.status_code == 400
    message = under.json()["message"]
    assert "'a/b.txt'" in message and "'a'" in message and "directory" in message
    # the other way round: a file where the session has a directory
    nested = _upload(client, "d/e.txt")
    over = _upload(client, "d", session_id=nested.json()["session_id"])
    assert over.status_code == 400 and "'d/e.txt'" in over.json()["message"]
    # the other side: the same name again, and names that only share a string prefix
    for name in ("a", "ab/c.txt", "a.txt"):
        assert _upload(client, name, session_id=session).status_code == 200, name
    names = [f["name"] for f in client.get(f"/files/{session}",
                                           params={"detail": "normalized"}).json()]
    assert "a/b.txt" not in names and names.count("a") == 2
    # in one batch: the first is stored, the part conflicting with it is refused
    batch = client.post("/upload/batch", files=[
        ("files", ("x", b"1", "text/plain")), ("files", ("x/y.txt", b"2", "text/plain")),
        ("files", ("z/y.txt", b"3", "text/plain"))]).json()
    statuses = {f["filename"]: f["status"] for f in batch["files"]}
    assert statuses == {"x": "success", "x/y.txt": "error", "z/y.txt": "success"}
    assert batch["message"] == "partial_success"


def test_a_session_holding_both_still_runs_newest_placed(client: httpx.Client) -> None:
    # A read-only file "a" in the session: the code's removal of it is dropped
    up = _upload(client, "a", b"file", read_only="true").json()
    session = up["session_id"]
    # the code turns the input file into a directory: the session now holds both
    turned = client.post("/exec", json={"lang": "bash", "session_id": session, "code": (
        "rm /mnt/data/a && mkdir /mnt/data/a && echo inside > /mnt/data/a/b.txt")})
    assert turned.status_code == 200 and turned.json()["status"] == "ok", turned.text
    assert turned.json()["deleted_files"] == []
    names = [f["name"] for f in client.get(f"/files/{session}",
                                           params={"detail": "normalized"}).json()]
    assert sorted(names) == ["a", "a/b.txt"]
    for _ in range(2):  # not once: every later run of the session works
        ran = client.post("/exec", json={"lang": "bash", "session_id": session,
                                         "code": "cat /mnt/data/a/b.txt"})
        assert ran.status_code == 200, ran.text
        body = ran.json()
        assert body["stdout"] == "inside\n" and body["files"] == []
        skipped = {s["name"]: s["reason"] for s in body["skipped_files"]}
        assert list(skipped) == ["a"] and "'a/b.txt'" in skipped["a"]


def test_a_stored_name_the_rules_now_refuse_is_left_out_not_a_failure(
        api: RunningApp, client: httpx.Client, tmp_path: Path) -> None:
    """A file stored before the name rules grew stricter (a soft hyphen in its name) is
    left out of the session's sandboxes with its reason; the session goes on running."""
    up = _upload(client, "fine.txt", b"ok").json()
    session = up["session_id"]
    source = tmp_path / "old"
    source.write_bytes(b"old")
    old = FileMeta(id=new_id(), session_id=session, tenant="default",
                   name="soft\u00adhyphen.txt", size=3, sha256=hashlib.sha256(b"old").hexdigest())
    api.run(api.app.state.file_service.objects.put(old, source))
    ran = client.post("/exec", json={"lang": "bash", "session_id": session,
                                     "code": "ls /mnt/data"})
    assert ran.status_code == 200 and ran.json()["stdout"] == "fine.txt\n", ran.text
    [skipped] = ran.json()["skipped_files"]
    assert skipped["name"] == old.name and "name is refused" in skipped["reason"]


def test_a_file_the_code_replaced_by_a_directory_is_gone(client: httpx.Client) -> None:
    made = client.post("/exec", json={"lang": "bash", "code": "echo file > /mnt/data/a"})
    session = made.json()["session_id"]
    turned = client.post("/exec", json={"lang": "bash", "session_id": session, "code": (
        "rm /mnt/data/a && mkdir /mnt/data/a && echo inside > /mnt/data/a/b.txt")}).json()
    assert turned["deleted_files"] == ["a"]
    ran = client.post("/exec", json={"lang": "bash", "session_id": session,
                                     "code": "cat /mnt/data/a/b.txt"}).json()
    assert ran["stdout"] == "inside\n" and ran["skipped_files"] == []


def test_references_that_conflict_place_the_newest(client: httpx.Client) -> None:
    older = _upload(client, "a", b"older file").json()
    newer = _upload(client, "a/b.txt", b"newer file").json()  # another session
    refs = [{"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"],
             "name": up["files"][0]["filename"]} for up in (older, newer)]
    for files in (refs, refs[::-1]):  # the newest wins, whatever the order of the list
        ran = client.post("/exec", json={"lang": "bash", "files": files,
                                         "code": "cat /mnt/data/a/b.txt"})
        assert ran.status_code == 200, ran.text
        body = ran.json()
        assert body["stdout"] == "newer file"
        assert [s["name"] for s in body["skipped_files"]] == ["a"]
    # no conflict, nothing skipped
    alone = client.post("/exec", json={"lang": "bash", "files": refs[:1],
                                       "code": "cat /mnt/data/a"}).json()
    assert alone["stdout"] == "older file" and alone["skipped_files"] == []
