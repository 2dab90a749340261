"""How a programmatic run's death by a signal is named to the client (``run_failure``):
the shell's code, 128 + the signal's number, for named and real-time signals alike."""

from __future__ import annotations

import signal

import pytest

from app.domain.programmatic.failures import run_failure
from app.executor import ExecutorResult
from app.executor.programmatic import ProgrammaticStep


def _died(name: str) -> ProgrammaticStep:
    return ProgrammaticStep(ExecutorResult.from_json({
        "status": "error", "stdout": "", "stderr": "", "exit_code": None, "signal": name,
        "max_rss": 0, "cpu_time": 0.0, "wall_time": 0.0, "stdout_truncated": False,
        "stderr_truncated": False}))


@pytest.mark.parametrize(("name", "code"), [
    ("SIGKILL", 128 + 9), ("SIGSEGV", 128 + 11),
    ("SIGRTMIN+6", 128 + signal.SIGRTMIN + 6), ("SIGRTMIN+0", 128 + signal.SIGRTMIN),
    ("SIG33", 128 + 33)])  # glibc's own, below SIGRTMIN: no name
def test_a_death_by_signal_is_the_shells_code(name: str, code: int) -> None:
    assert run_failure(_died(name)) == f"Sandbox exited with code {code}"


@pytest.mark.parametrize("name", ["SIGNOPE", "SIGRTMIN+x", "SIG", "SIGx9"])
def test_an_unknown_signal_name_is_unknown(name: str) -> None:
    assert run_failure(_died(name)) == "Sandbox exited with code unknown"
