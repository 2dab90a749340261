"""The executor's kept mode (runtime sessions): ``POST /keep`` before the first run, then
each ``/execute`` is a new process of the same sandbox, the work dir kept and the
scratch space wiped; ordinary sandboxes stay single-use. Also ``DELETE /files/{path}``
and the wipe itself (links never followed, ``chmod 000`` trees removed).

The executor runs as a plain process here (not PID 1), so it wipes only its build dir;
inside real sandboxes (``/tmp`` as a whole) see ``tests/runtime/test_runtime_sessions.py``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.contract import TOKEN_HEADER
from sidecar.kept import scratch_dirs, wipe

from .test_server import _call, _executor

PY = {"lang": "py"}


@pytest.fixture
def executor(tmp_path: Path, runtime_dir: Path) -> Iterator[Path]:
    """A fresh executor (its work dir ``tmp_path / "work"``); its socket. Killed after."""
    process, sock = _executor(tmp_path, runtime_dir)
    try:
        yield sock
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def kept(executor: Path) -> Path:
    """A fresh executor made a kept one (``POST /keep``); its socket."""
    assert _call(executor, "POST", "/keep") == (200, {"kept": True})
    return executor


def test_an_ordinary_sandbox_stays_single_use(executor: Path) -> None:
    assert _call(executor, "POST", "/execute", {**PY, "code": "print(1)"})[0] == 200
    status, body = _call(executor, "POST", "/execute", {**PY, "code": "print(2)"})
    assert status == 409 and "one execution" in body["message"]
    # and it cannot be made a kept one afterwards
    status, body = _call(executor, "POST", "/keep")
    assert status == 409 and "only a fresh one" in body["message"]


def test_a_kept_sandbox_runs_again_with_its_work_dir_and_a_clean_scratch(
        kept: Path) -> None:
    assert _call(kept, "GET", "/health?wait=60")[1]["kept"] is True
    status, first = _call(kept, "POST", "/execute", {**PY, "code": (
        "import os\nopen('a.csv', 'w').write('x,y\\n1,2\\n')\n"
        "open(os.path.join(os.environ['HOME'], 'build', 'scratch'), 'w').write('s')\n"
        "print(os.getpid())")})
    assert status == 200 and first["status"] == "ok", first
    assert [f["name"] for f in first["files"]] == ["a.csv"]
    status, second = _call(kept, "POST", "/execute", {**PY, "code": (
        "import os\nprint(open('a.csv').read().splitlines()[1])\n"
        "print(os.path.exists(os.path.join(os.environ['HOME'], 'build', 'scratch')))\n"
        "print(os.getpid())")})
    assert status == 200 and second["status"] == "ok", second
    line, scratch, pid = second["stdout"].splitlines()
    assert line == "1,2" and scratch == "False"
    assert pid != first["stdout"].strip()  # a new process of the same sandbox
    # a failing program, then another run
    status, third = _call(kept, "POST", "/execute", {**PY, "code": "raise SystemExit(3)"})
    assert status == 200 and third["exit_code"] == 3
    status, fourth = _call(kept, "POST", "/execute", {**PY, "code": "print('still')"})
    assert (status, fourth["stdout"]) == (200, "still\n")


def test_a_kept_sandbox_runs_a_programmatic_run_then_more(
        kept: Path) -> None:
    status, paused = _call(kept, "POST", "/execute", {**PY, "tools": ["add"], "code": (
        "open('p.txt', 'w').write('p')\nprint(await add(a=1, b=2))")})
    assert (status, paused["status"]) == (200, "tool_call_required"), paused
    call = paused["tool_calls"][0]
    status, done = _call(kept, "POST", "/execute/continue", {
        "tool_results": [{"id": call["id"], "ok": True, "result": 3}]})
    assert (status, done["status"], done["stdout"]) == (200, "ok", "3\n"), done
    status, after = _call(kept, "POST", "/execute", {**PY, "code": (
        "print(open('p.txt').read())")})
    assert (status, after["stdout"]) == (200, "p\n"), after


TOKEN = "t0ken-" + "x" * 40


def test_a_kept_sandbox_with_a_token_runs_only_what_presents_it(executor: Path) -> None:
    assert _call(executor, "POST", "/keep", {"token": "short"})[0] == 400
    assert _call(executor, "POST", "/keep", {"token": TOKEN}) == (200, {"kept": True})
    run = {**PY, "code": "print(1)"}
    for headers in ({}, {TOKEN_HEADER: TOKEN + "y"}, {TOKEN_HEADER: ""}):
        status, body = _call(executor, "POST", "/execute", run, headers)
        assert status == 403 and "only the API that claimed it" in body["message"], body
        assert _call(executor, "POST", "/execute/stream", run, headers)[0] == 403
    for _ in range(2):
        status, body = _call(executor, "POST", "/execute", run, {TOKEN_HEADER: TOKEN})
        assert (status, body["stdout"]) == (200, "1\n"), body


def test_user_code_cannot_queue_a_run_of_its_own(executor: Path) -> None:
    """The attack: code in a kept sandbox that can reach its executor (a pod's shared
    network) asks it for a run of its own, which would wait for the lock and run after
    the API's, outside every limit. Refused at once without the token."""
    assert _call(executor, "POST", "/keep", {"token": TOKEN})[0] == 200
    rogue = (
        "import http.client, json, socket\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock = socket.socket(socket.AF_UNIX)\n"
        "        self.sock.settimeout(5)\n"
        f"        self.sock.connect({str(executor)!r})\n"
        "c = C('sandbox')\n"
        "body = json.dumps({'lang': 'py', 'timeout': 1000, 'code': "
        "\"open('rogue.txt', 'w').write('ran')\"})\n"
        "try:\n"
        "    c.request('POST', '/execute', body, {'Content-Type': 'application/json'})\n"
        "    print(c.getresponse().status)\n"
        "except OSError as exc:\n"
        "    print('no answer', type(exc).__name__)\n")
    status, body = _call(executor, "POST", "/execute", {**PY, "code": rogue},
                         {TOKEN_HEADER: TOKEN})
    assert (status, body["stdout"]) == (200, "403\n"), body
    status, after = _call(executor, "POST", "/execute", {**PY, "code": (
        "import os\nprint(os.path.exists('rogue.txt'))")}, {TOKEN_HEADER: TOKEN})
    assert (status, after["stdout"]) == (200, "False\n"), after


def test_delete_removes_one_file_never_following_links(
        executor: Path, tmp_path: Path) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    outside.write_text("keep me")
    (work / "a.csv").write_text("1")
    (work / "sub").mkdir()
    (work / "sub" / "b.txt").write_text("2")
    (work / "link").symlink_to(outside)
    assert _call(executor, "DELETE", "/files/a.csv") == (200, {"removed": True})
    assert _call(executor, "DELETE", "/files/sub/b.txt")[0] == 200
    assert _call(executor, "DELETE", "/files/link")[0] == 200
    assert not (work / "a.csv").exists() and not (work / "sub" / "b.txt").exists()
    assert not (work / "link").is_symlink() and outside.read_text() == "keep me"
    assert _call(executor, "DELETE", "/files/a.csv")[0] == 404
    assert _call(executor, "DELETE", "/files/sub")[0] == 409
    assert _call(executor, "DELETE", "/files/..%2Fetc")[0] in (400, 404)
    assert _call(executor, "DELETE", "/nothing")[0] == 404


def test_wipe_removes_locked_trees_and_links_not_their_targets(tmp_path: Path) -> None:
    scratch, outside = tmp_path / "scratch", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("p")
    scratch.mkdir()
    locked = scratch / "locked" / "deeper"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    os.chmod(locked, 0)
    os.chmod(scratch / "locked", stat.S_IXUSR)
    (scratch / "to-outside").symlink_to(outside)
    (scratch / ".hidden").write_text("h")
    os.mkfifo(scratch / "fifo")
    assert wipe(str(scratch)) >= 5
    assert list(scratch.iterdir()) == []
    assert (outside / "precious").read_text() == "p"
    assert wipe(str(tmp_path / "absent")) == 0


def test_outside_a_sandbox_only_the_build_dir_is_scratch() -> None:
    assert os.getpid() != 1
    assert scratch_dirs("/tmp/.k8si-build") == ("/tmp/.k8si-build",)
