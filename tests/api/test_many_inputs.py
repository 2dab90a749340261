"""A session with more inputs than a sandbox has threads: each input streamed into the
sandbox used to leave its connection open, holding one of the executor's threads, and
past ~123 inputs (``MAX_PROCESSES`` 128) the sandbox could start no more: every run of
the session answered 503 "try again", for good."""

from __future__ import annotations

import httpx


def test_a_session_with_150_files_runs(client: httpx.Client) -> None:
    session = None
    for batch in range(30):
        form: dict[str, str] = {"session_id": session} if session else {}
        files = [("files", (f"f{batch:02d}-{index}.txt", f"{batch}.{index}".encode(),
                            "text/plain")) for index in range(5)]
        response = client.post("/upload/batch", files=files, data=form)
        assert response.status_code == 200, response.text
        session = response.json()["session_id"]
    listed = client.get(f"/files/{session}", params={"detail": "normalized"}).json()
    assert len(listed) == 150
    for _ in range(2):  # and again: nothing was left holding the sandbox's threads
        result = client.post("/exec", json={
            "lang": "bash", "session_id": session,
            "code": "ls /mnt/data | wc -l; cat /mnt/data/f29-4.txt"})
        assert result.status_code == 200, result.text
        assert result.json()["stdout"] == "150\n29.4"
