"""The runner outside a sandbox (not PID 1): caps, timeouts and statuses on real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.languages import LANGUAGES
from sidecar.protocol import ExecuteRequest, ExecuteResult, ProtocolError
from sidecar.runner import Runner, RunnerConfig


def runner(tmp_path: Path, lang: str = "bash", **config: Any) -> Runner:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    settings = RunnerConfig(workdir=str(work), build_dir=str(tmp_path / "build"),
                            user_env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                            **config)
    return Runner(settings, LANGUAGES[lang])


def run(tmp_path: Path, code: str, timeout: float = 10, **config: Any) -> ExecuteResult:
    return runner(tmp_path, **config).execute(
        ExecuteRequest(lang="bash", code=code, timeout=timeout))


def test_ok_and_exit_codes(tmp_path: Path) -> None:
    result = run(tmp_path, "echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.status, result.stdout, result.stderr) == (
        7, "error", "out\n", "err\n")


def test_output_cap_on_both_sides(tmp_path: Path) -> None:
    exact = run(tmp_path, "head -c 1024 /dev/zero | tr '\\0' x", max_output_bytes=1024)
    assert exact.status == "ok" and len(exact.stdout) == 1024
    over = run(tmp_path, "head -c 1025 /dev/zero | tr '\\0' x", max_output_bytes=1024)
    assert over.status == "output_limit"
    assert over.stdout_truncated and len(over.stdout) == 1024


def test_endless_output_is_stopped(tmp_path: Path) -> None:
    result = run(tmp_path, "yes", max_output_bytes=4096)
    assert result.status == "output_limit" and len(result.stdout) == 4096


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    result = run(tmp_path, "sleep 60 & sleep 60", timeout=0.5)
    assert result.status == "timeout"
    assert result.wall_time < 5


def test_background_child_holding_stdout_does_not_hang(tmp_path: Path) -> None:
    result = run(tmp_path, "(sleep 60; echo late) & echo early", timeout=20)
    assert result.status == "ok" and result.stdout == "early\n"
    assert result.wall_time < 5


def test_environment_is_only_what_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET", "s3cret")
    result = run(tmp_path, "env")
    assert "s3cret" not in result.stdout
    assert "PATH=/usr/bin:/bin" in result.stdout


def test_rlimits_apply(tmp_path: Path) -> None:
    result = run(tmp_path, "ulimit -c; ulimit -n; umask")
    assert result.stdout.split() == ["0", "1024", "0077"]


def test_compile_failure_reports_diagnostics(tmp_path: Path) -> None:
    r = runner(tmp_path, "c")
    result = r.execute(ExecuteRequest(lang="c", code="int main(void) { return x; }"))
    assert result.status == "error" and result.message == "Compilation failed"
    assert "x" in result.stderr and result.exit_code != 0


@pytest.mark.parametrize("body", [[], {"lang": 1, "code": ""}, {"lang": "py", "code": "x",
                                  "args": "a"}, {"lang": "py", "code": "x", "timeout": 0},
                                  {"lang": "py", "code": "x", "timeout": True}])
def test_protocol_rejects_bad_requests(body: object) -> None:
    with pytest.raises(ProtocolError):
        ExecuteRequest.from_json(body)
