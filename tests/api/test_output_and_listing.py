"""Files as today's client uses them (issue 15), over real HTTP with real sandboxes.

The ``detail=full`` listing the client parses (and its scope parameters); nested
upload paths placed at that path; read-only inputs whose edits are dropped and whose
original is echoed ``inherited``; output names the executor refuses and directories
past the depth cap reported in ``skipped_files`` without failing the run; uploads
that stay visible to every later execution of their session.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import RunningApp


def _upload(client: httpx.Client, *files: tuple[str, bytes], **fields: str) -> dict[str, str]:
    response = client.post("/upload", data=fields, files=[
        ("file", (name, content, "application/octet-stream")) for name, content in files])
    assert response.status_code == 200, response.text
    body = response.json()
    return {"session_id": body["session_id"],
            **{f["filename"]: f["fileId"] for f in body["files"]}}


def _client_refs(entries: list[dict[str, object]], session: str) -> list[dict[str, object]]:
    """What ``normalizeSessionFile`` of ``@librechat/agents`` builds from a full entry."""
    refs = []
    for entry in entries:
        name = str(entry["name"])
        fallback = name.split("/")[1].split(".", maxsplit=1)[0] if "/" in name else ""
        metadata = entry.get("metadata")
        original = metadata.get("original-filename") if isinstance(metadata, dict) else None
        file_id = entry.get("id") or fallback
        refs.append({"storage_session_id": entry.get("storage_session_id") or session,
                     "kind": "user", "id": file_id, "resource_id": file_id,
                     "name": original if isinstance(original, str) else name})
    return refs


def test_the_full_listing_is_what_the_client_parses(client: httpx.Client) -> None:
    up = _upload(client, ("table.csv", b"a,b\n1,2\n"), ("README", b"plain"))
    session = up["session_id"]
    entries = client.get(f"/files/{session}", params={"detail": "full"}).json()
    by_name = {e["metadata"]["original-filename"]: e for e in entries}
    csv = by_name["table.csv"]
    assert csv["id"] == up["table.csv"] and csv["name"] == f"{session}/{up['table.csv']}.csv"
    assert csv["size"] == 8 and csv["contentType"] == "text/csv"
    assert csv["metadata"]["content-type"] == "text/csv"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", csv["lastModified"])
    assert by_name["README"]["name"] == f"{session}/{up['README']}"  # no extension, no dot
    # the id the client falls back to (name between "/" and ".") is the file id too
    assert {e["name"].split("/")[1].split(".")[0] for e in entries} == {
        up["table.csv"], up["README"]}
    # the older client's levels are unchanged
    assert sorted(client.get(f"/files/{session}").json()) == sorted(
        f"{session}/{up[n]}" for n in ("table.csv", "README"))
    summary = client.get(f"/files/{session}", params={"detail": "summary"}).json()
    assert {e["name"] for e in summary} == {f"{session}/{up[n]}" for n in ("table.csv",
                                                                           "README")}
    # the client rebuilds references from the listing and reads the files by them
    ran = client.post("/exec", json={"lang": "py", "code": "print(open('/mnt/data/table.csv')"
                                     ".read().split()[1])",
                                     "files": _client_refs(entries, session)}).json()
    assert ran["stdout"] == "1,2\n"


def test_scoped_listing_follows_kind_id_and_version(client: httpx.Client) -> None:
    up = _upload(client, ("skill.md", b"# skill"), kind="skill", id="sk-1", version="2")
    session = up["session_id"]

    def listed(**query: str) -> list[str]:
        return [e["id"] for e in client.get(f"/files/{session}",
                                            params={"detail": "full", **query}).json()]

    assert listed(kind="skill", id="sk-1", version="2") == [up["skill.md"]]
    assert listed() == [up["skill.md"]]
    assert listed(kind="skill", id="sk-1", version="3") == []
    assert listed(kind="agent", id="sk-1") == []
    entry = client.get(f"/files/{session}", params={"detail": "full"}).json()[0]
    assert (entry["kind"], entry["resource_id"], entry["version"]) == ("skill", "sk-1", "2")


def test_nested_upload_paths_are_placed_at_that_path(client: httpx.Client) -> None:
    up = _upload(client, ("scripts/helper.py", b"def f():\n    return 42\n"),
                 ("a/b/c/deep.txt", b"four levels"))
    session = up["session_id"]
    ran = client.post("/exec", json={"lang": "py", "session_id": session, "code": (
        "import sys\nsys.path.insert(0, '/mnt/data/scripts')\nimport helper\n"
        "print(helper.f(), open('/mnt/data/a/b/c/deep.txt').read())")}).json()
    assert ran["stdout"] == "42 four levels\n" and ran["files"] == []
    entries = client.get(f"/files/{session}", params={"detail": "full"}).json()
    helper = next(e for e in entries if e["metadata"]["original-filename"] == "scripts/helper.py")
    assert helper["name"] == f"{session}/{up['scripts/helper.py']}.py"
    download = client.get(f"/download/{session}/{up['scripts/helper.py']}")
    assert download.content.startswith(b"def f()")
    assert "filename*=UTF-8''scripts%2Fhelper.py" in download.headers["content-disposition"]


def test_edits_to_a_read_only_input_are_dropped(client: httpx.Client) -> None:
    ro = _upload(client, ("ro.txt", b"original"), read_only="true")
    rw = _upload(client, ("rw.txt", b"original"), session_id=ro["session_id"])
    session = ro["session_id"]
    edit = ("for n in ('ro.txt', 'rw.txt'):\n"
            "    open('/mnt/data/' + n, 'w').write('edited')\nprint('done')")
    ran = client.post("/exec", json={"lang": "py", "session_id": session, "code": edit}).json()
    assert ran["stdout"] == "done\n"
    files = {f["name"]: f for f in ran["files"]}
    assert files["ro.txt"]["inherited"] is True and files["ro.txt"]["id"] == ro["ro.txt"]
    assert files["ro.txt"]["storage_session_id"] == session
    assert files["rw.txt"]["inherited"] is False
    assert files["rw.txt"]["modified_from"] == {"id": rw["rw.txt"], "storage_session_id": session}
    after = client.post("/exec", json={"lang": "bash", "session_id": session,
                                       "code": "cat /mnt/data/ro.txt; echo; cat /mnt/data/rw.txt"})
    assert after.json()["stdout"] == "original\nedited"
    # an unchanged read-only input is not echoed
    assert after.json()["files"] == []


@pytest.mark.attack("files")
def test_refused_and_too_deep_output_names_are_skipped_not_fatal(client: httpx.Client) -> None:
    code = ("import os\n"
            "for name in ('-rf', 'bad\\nname.txt', 'ok.txt'):\n"
            "    open('/mnt/data/' + name, 'w').write('x')\n"
            "os.makedirs('/mnt/data/a/b/c/d', exist_ok=True)\n"
            "open('/mnt/data/a/b/c/d/too-deep.txt', 'w').write('x')\n"
            "open('/mnt/data/a/b/c/fits.txt', 'w').write('x')\n"
            "print('hello')")
    response = client.post("/exec", json={"lang": "py", "code": code})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["status"], result["stdout"]) == ("ok", "hello\n")
    assert sorted(f["name"] for f in result["files"]) == ["a/b/c/fits.txt", "ok.txt"]
    skipped = {s["name"]: s["reason"] for s in result["skipped_files"]}
    assert set(skipped) == {"-rf", "bad\nname.txt", "a/b/c/d/"}
    assert skipped["-rf"].startswith("file name not allowed")
    assert skipped["bad\nname.txt"].startswith("file name not allowed")
    assert skipped["a/b/c/d/"] == "deeper than 4 levels below /mnt/data"
    assert "executor" not in response.text


def test_uploads_stay_visible_to_every_later_execution(client: httpx.Client,
                                                       api: RunningApp) -> None:
    session = _upload(client, ("input.txt", b"uploaded"))["session_id"]
    read = {"lang": "bash", "session_id": session, "code": "cat /mnt/data/input.txt"}
    assert client.post("/exec", json=read).json()["stdout"] == "uploaded"  # no outputs
    assert client.post("/exec", json=read).json()["stdout"] == "uploaded"
    wrote = client.post("/exec", json={"lang": "bash", "session_id": session,
                                       "code": "echo out > /mnt/data/out.txt"}).json()
    assert [f["name"] for f in wrote["files"]] == ["out.txt"]  # an output in between
    both = client.post("/exec", json={**read, "code": "cat /mnt/data/input.txt "
                                                      "/mnt/data/out.txt"}).json()
    assert both["stdout"] == "uploadedout\n"
