"""The executor's side of state, outside a sandbox (like ``tests/sidecar``): the blob on
stdin, the capture read back defensively, and the wire format's checks.

The warm interpreter is the sandbox runtime's Python (it has cloudpickle and lz4).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from sidecar.languages import LANGUAGES
from sidecar.protocol import ExecuteRequest, ExecuteResult, ProtocolError
from sidecar.runner import Runner, RunnerConfig
from sidecar.state import BLOB_NAME, REPORT_NAME


def _execute(tmp_path: Path, runtime_dir: Path, code: str, **fields: Any) -> ExecuteResult:
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    config = RunnerConfig(
        workdir=str(work), build_dir=str(tmp_path / "build"), preload=(),
        user_env={"PATH": f"{runtime_dir / 'python' / 'bin'}:/usr/bin:/bin",
                  "HOME": str(tmp_path)})
    runner = Runner(config, LANGUAGES["py"])
    runner.warm_up()
    assert runner.wait_ready(60)
    return runner.execute(ExecuteRequest(lang="py", code=code, timeout=20,
                                         capture_state=True, **fields))


def _blob(result: ExecuteResult) -> bytes:
    assert result.state is not None, result
    return base64.b64decode(result.state)


def test_round_trip_through_the_executor(tmp_path: Path, runtime_dir: Path) -> None:
    first = _execute(tmp_path / "a", runtime_dir, "n = 20\ndef twice():\n    return n * 2")
    assert first.state_status == "captured" and first.state_errors == []
    second = _execute(tmp_path / "b", runtime_dir, "n = 21\nprint(twice())",
                      state=_blob(first))
    assert second.stdout == "42\n" and second.state_status == "captured"
    # The sandbox reports how long each step took (the benchmark's state figures).
    assert first.state_restore_time is None and first.state_capture_time is not None
    assert second.state_restore_time is not None and second.state_capture_time is not None
    assert 0 < second.state_restore_time < second.wall_time


def test_forged_timings_in_the_report_are_dropped(tmp_path: Path, runtime_dir: Path) -> None:
    code = (f"import json, os\nbuild = os.path.dirname(__file__)\n"
            f"json.dump({{'status': 'empty', 'errors': [], 'seconds': {{'capture': -1, "
            f"'restore': 'soon', 'other': 3}}}}, open(os.path.join(build, {REPORT_NAME!r}), 'w'))"
            f"\nos._exit(0)")
    result = _execute(tmp_path, runtime_dir, code)
    assert result.state_status == "empty"
    assert result.state_restore_time is None and result.state_capture_time is None


def test_capture_switch_for_failed_runs(tmp_path: Path, runtime_dir: Path) -> None:
    off = _execute(tmp_path / "a", runtime_dir, "x = 1\nraise SystemExit(2)",
                   capture_state_on_error=False)
    assert off.exit_code == 2 and off.state_status == "skipped" and off.state is None
    on = _execute(tmp_path / "b", runtime_dir, "x = 1\n1 / 0")
    assert on.exit_code == 1 and on.state_status == "captured"
    assert "ZeroDivisionError" in on.stderr


def test_a_timeout_keeps_the_previous_state(tmp_path: Path, runtime_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    config = RunnerConfig(workdir=str(work), build_dir=str(tmp_path / "build"), preload=(),
                          user_env={"PATH": f"{runtime_dir / 'python' / 'bin'}:/usr/bin"})
    runner = Runner(config, LANGUAGES["py"])
    runner.warm_up()
    result = runner.execute(ExecuteRequest(lang="py", code="x = 1\nwhile True: pass",
                                           timeout=1, capture_state=True))
    assert result.status == "timeout" and result.state_status == "skipped"


@pytest.mark.parametrize("forgery", [
    f"os.symlink('/etc/passwd', os.path.join(build, {REPORT_NAME!r}))",
    f"os.mkfifo(os.path.join(build, {REPORT_NAME!r}))",
    f"open(os.path.join(build, {REPORT_NAME!r}), 'w').write('not json')",
])
def test_a_forged_report_is_not_followed(tmp_path: Path, runtime_dir: Path,
                                         forgery: str) -> None:
    code = f"import os\nbuild = os.path.dirname(__file__)\n{forgery}\nos._exit(0)"
    result = _execute(tmp_path, runtime_dir, code)
    assert result.status == "ok" and result.state_status == "skipped"
    assert result.state is None


def test_a_report_that_cannot_be_written_leaves_the_run_alone(tmp_path: Path,
                                                             runtime_dir: Path) -> None:
    code = f"import os\nos.mkdir(os.path.join(os.path.dirname(__file__), {REPORT_NAME!r}))\nx = 1"
    result = _execute(tmp_path, runtime_dir, code)
    assert result.status == "ok" and result.exit_code == 0, result
    assert result.state_status == "skipped" and "were not saved" in result.stderr


@pytest.mark.parametrize("forge_blob", [
    'open(blob, "wb").write(b"\\x01\\x04\\x22\\x4d\\x18" * 1000)',  # over the cap
    "os.mkdir(blob)",
    "os.symlink('/etc/passwd', blob)",
])
def test_a_forged_blob_is_refused(tmp_path: Path, runtime_dir: Path, forge_blob: str) -> None:
    code = f"""
import json, os
build = os.path.dirname(__file__)
blob = os.path.join(build, {BLOB_NAME!r})
{forge_blob}
open(os.path.join(build, {REPORT_NAME!r}), "w").write(json.dumps({{"status": "captured"}}))
os._exit(0)
"""
    result = _execute(tmp_path, runtime_dir, code, max_state_bytes=1024)
    assert result.status == "ok" and result.state_status == "empty" and result.state is None
    assert "missing, malformed or larger than 1024" in result.state_errors[-1]["error"]


def test_a_blob_that_is_not_a_state_does_not_stop_the_run(tmp_path: Path,
                                                          runtime_dir: Path) -> None:
    result = _execute(tmp_path, runtime_dir, "print('ran')", state=b"\x07garbage")
    assert result.status == "ok" and result.stdout == "ran\n"
    assert "unknown state format version 7" in result.stderr
    assert result.state_errors[0]["name"] == "*"


@pytest.mark.parametrize("body", [
    {"state": 5}, {"state": "!!not base64!!"}, {"capture_state": "yes"},
    {"max_state_bytes": 0}, {"max_state_bytes": True},
    {"state": base64.b64encode(b"x" * 10).decode(), "max_state_bytes": 5},
])
def test_wire_format_checks(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        ExecuteRequest.from_json({"lang": "py", "code": "", **body})
