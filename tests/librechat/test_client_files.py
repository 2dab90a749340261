"""The real ``@librechat/agents`` client with files, sessions and long runs.

Entry points: the code tool is ``createCodeExecutionTool(...).invoke(toolCall)`` with
the ``session_id``/``_injected_files`` LibreChat's ToolNode puts on the call
(``scripts/exec.mjs``, ``scripts/session.mjs``); the session listing is the exported
``fetchSessionFiles`` (``scripts/upload.mjs``), whose references the test hands to the
tool unchanged. Uploads and downloads are LibreChat server code, not in the package:
the upload is the multipart request that server sends (``form-data`` with
``filepath``), the download a plain ``GET /download/...`` of the artifact's ids.
"""

from __future__ import annotations

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient


def test_a_produced_file_is_delivered_and_fetched(api: RunningApp,
                                                  librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, args={
        "lang": "py", "code": "open('/mnt/data/report.csv', 'w').write('a,b\\n1,2\\n')\n"
                              "print('written')"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\nwritten")
    assert "Generated files:\nSession files: 1 persisted file(s)" in answer["content"]
    artifact = answer["artifact"]
    (produced,) = artifact["files"]
    assert produced["name"] == "report.csv" and produced["inherited"] is False
    with api.client() as client:
        fetched = client.get(f"/download/{produced['storage_session_id']}/{produced['id']}")
    assert fetched.status_code == 200 and fetched.content == b"a,b\n1,2\n"


def test_an_upload_is_read_through_the_references_the_client_builds(
        api: RunningApp, librechat: LibreChatClient) -> None:
    listed = librechat.run("upload", base_url=api.base_url, api_key=API_KEY, batch=True,
                           files=[{"filename": "helper.py", "filepath": "scripts/helper.py",
                                   "text": "def answer():\n    return 42\n"},
                                  {"filename": "data.txt", "text": "from the upload"}])
    assert listed["status"] == 200 and listed["uploaded"]["succeeded"] == 2, listed
    refs = listed["refs"]  # fetchSessionFiles: [] when it could not parse the listing
    assert sorted(ref["name"] for ref in refs) == ["data.txt", "scripts/helper.py"]
    session = listed["uploaded"]["session_id"]
    assert all(ref["storage_session_id"] == session and ref["kind"] == "user" for ref in refs)
    assert {ref["id"] for ref in refs} == {f["fileId"] for f in listed["uploaded"]["files"]}
    # two calls carrying those references, the first with an output in between
    ran = librechat.run("session", base_url=api.base_url, api_key=API_KEY, files=refs, calls=[
        {"lang": "py", "code": "import sys\nsys.path.insert(0, '/mnt/data/scripts')\n"
                               "import helper\nprint(helper.answer(), "
                               "open('/mnt/data/data.txt').read())\n"
                               "open('/mnt/data/out.txt', 'w').write('x')"},
        {"lang": "bash", "code": "cat /mnt/data/data.txt /mnt/data/out.txt"}])
    first, second = ran["results"]
    assert first["ok"] and second["ok"], ran
    assert first["content"].startswith("stdout:\n42 from the upload")
    assert second["content"].startswith("stdout:\nfrom the uploadx")
    assert first["artifact"]["session_id"] != session  # a reference never joins a session


def test_executions_continue_through_the_client_session(
        api: RunningApp, librechat: LibreChatClient) -> None:
    """The tool sends no ``session_id`` (CodeExecutor reads it off the call but leaves it
    out of the body): calls continue through the ``_injected_files`` references."""
    ran = librechat.run("session", base_url=api.base_url, api_key=API_KEY, calls=[
        {"lang": "py", "code": "open('/mnt/data/notes.txt', 'w').write('first\\n')\n"
                               "print('one')"},
        {"lang": "bash", "code": "cat /mnt/data/notes.txt"},  # no output in between
        {"lang": "bash", "code": "echo third >> /mnt/data/notes.txt; cat /mnt/data/notes.txt"},
    ])
    first, second, third = ran["results"]
    assert first["ok"] and second["ok"] and third["ok"], ran
    assert first["content"].startswith("stdout:\none")
    assert second["content"] == "stdout:\nfirst" and "files" not in second["artifact"]
    assert third["content"].startswith("stdout:\nfirst\nthird")
    (changed,) = third["artifact"]["files"]  # the changed file is a new one
    assert changed["modified_from"]["id"] == first["artifact"]["files"][0]["id"]
    assert [f["id"] for f in ran["session"]["files"]] == [changed["id"]]


def test_a_long_run_reaches_the_client_whole(api: RunningApp,
                                             librechat: LibreChatClient) -> None:
    """Keep-alive whitespace before the JSON: node-fetch's ``response.json()`` reads it."""
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, args={
        "lang": "bash", "code": "sleep 4; echo late"})
    assert answer["ok"], answer
    assert answer["content"] == "stdout:\nlate"


def test_a_timeout_tells_the_model_why(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY,
                           params={"timeout": 1000},  # ms, as the client's own runs send
                           args={"lang": "bash", "code": "sleep 10"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout: Empty.")
    assert "stderr:\nTime limit exceeded after 1 s" in answer["content"]

