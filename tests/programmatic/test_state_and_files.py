"""A completed programmatic run stores its files and keeps the session's variables, as
``/exec`` does; the tool functions themselves are not session state."""

from __future__ import annotations

import httpx

from .helpers import drive


def test_files_of_the_completed_run_are_stored(client: httpx.Client) -> None:
    code = ("rows = [await add(a=i, b=i) for i in range(3)]\n"
            "open('/mnt/data/doubles.csv', 'w').write('\\n'.join(map(str, rows)))\n"
            "print('written')")
    answer, rounds = drive(client, {"code": code})
    assert answer["status"] == "completed" and len(rounds) == 3, answer
    [entry] = answer["files"]
    assert entry["name"] == "doubles.csv" and entry["path"] == "/mnt/data/doubles.csv"
    session = answer["session_id"]
    assert entry["storage_session_id"] == session
    download = client.get(f"/download/{session}/{entry['id']}")
    assert download.status_code == 200 and download.content == b"0\n2\n4"
    listed = client.get(f"/files/{session}").json()
    assert listed == [f"{session}/{entry['id']}"]


def test_session_variables_persist(client: httpx.Client) -> None:
    first, _ = drive(client, {"code": "total = await add(a=2, b=3)\nimport json"})
    assert first["status"] == "completed" and first["has_state"] is True, first
    session = first["session_id"]
    # an ordinary execution of the session sees the variable, and no tool function
    later = client.post("/exec", json={"lang": "py", "session_id": session, "code": (
        "print(total, json.dumps([1]), 'add' in globals(), 'ToolError' in globals())")})
    assert later.json()["stdout"] == "5 [1] False False\n", later.json()
    # and so does the next programmatic run of the session
    again, _ = drive(client, {"session_id": session,
                              "code": "total = await mul(a=total, b=10)\nprint(total)"})
    assert again["stdout"] == "50\n" and again["session_id"] == session
    last = client.post("/exec", json={"lang": "py", "session_id": session,
                                      "code": "print(total)"})
    assert last.json()["stdout"] == "50\n"


def test_input_files_are_there(client: httpx.Client) -> None:
    upload = client.post("/upload", files={"file": ("data.txt", b"21")})
    assert upload.status_code == 200, upload.text
    session = upload.json()["session_id"]
    code = "n = int(open('/mnt/data/data.txt').read())\nprint(await mul(a=n, b=2))"
    answer, _ = drive(client, {"code": code, "session_id": session})
    assert answer["stdout"] == "42\n" and answer["files"] == [], answer
