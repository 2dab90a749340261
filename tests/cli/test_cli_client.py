"""``k8si exec`` and ``k8si status`` as a user runs them, against a running API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli_client import guess_language, iter_sse
from tests.conftest import API_KEY, RunningApp

PLOT = """
import sys
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.savefig("chart.png")
with open("report/summary.csv", "w") as handle:
    handle.write("k,v\\na,1\\n")
print("args", sys.argv[1:])
print("to stderr", file=sys.stderr)
"""


def k8si(api: RunningApp, *args: str, cwd: Path, env_key: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SI_URL": api.base_url}
    env.pop("K8SI_API_KEY", None)
    if env_key:
        env["K8SI_API_KEY"] = API_KEY
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_exec_streams_output_and_saves_produced_files(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "plot.py").write_text("import os\nos.makedirs('report', exist_ok=True)\n" + PLOT)
    done = k8si(api, "exec", "plot.py", "--arg", "one", "--arg", "two words",
                "--out", "results", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "args ['one', 'two words']\n"
    assert "to stderr" in done.stderr and "k8si: session " in done.stderr
    chart = tmp_path / "results" / "chart.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results" / "report" / "summary.csv").read_text() == "k,v\na,1\n"


def test_inputs_and_a_continued_session(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("n\n1\n2\n3\n")
    (tmp_path / "first.py").write_text(
        "import pandas as pd\ntotal = int(pd.read_csv('data.csv')['n'].sum())\nprint(total)\n")
    first = k8si(api, "exec", "first.py", "--file", "data.csv", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "6\n"
    session = first.stderr.split("k8si: session ")[1].split()[0]
    (tmp_path / "second.py").write_text("print(total * 7)\n")
    second = k8si(api, "exec", "second.py", "--session", session, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "42\n"


def test_the_language_comes_from_the_extension(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "hello.sh").write_text('echo "bash $BASH_VERSION" | cut -c1-4\n')
    done = k8si(api, "exec", "hello.sh", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "bash\n")
    (tmp_path / "script.txt").write_text("print('py via --lang')\n")
    assert k8si(api, "exec", "script.txt", "--lang", "py", cwd=tmp_path).stdout == (
        "py via --lang\n")
    unknown = k8si(api, "exec", "script.txt", cwd=tmp_path)
    assert unknown.returncode == 2 and "--lang" in unknown.stderr
    assert [guess_language(Path(n)) for n in ("a.py", "b.cc", "c.R", "d.f90", "e.mjs",
                                              "Main.java", "x.unknown")] == [
        "py", "cpp", "r", "f90", "js", "java", None]


def test_exit_status_follows_the_program(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "fail.sh").write_text("echo partial; exit 3\n")
    failed = k8si(api, "exec", "fail.sh", cwd=tmp_path)
    assert (failed.returncode, failed.stdout) == (3, "partial\n")
    assert "k8si: error: exit status 3" in failed.stderr  # the status, not only "error"
    (tmp_path / "slow.sh").write_text("sleep 30\n")
    timed_out = k8si(api, "exec", "slow.sh", "--timeout", "1", cwd=tmp_path)
    assert timed_out.returncode == 1 and "k8si: timeout: Time limit exceeded" in timed_out.stderr


def test_output_is_printed_while_the_program_runs(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "ticks.sh").write_text("echo first; sleep 2; echo second\n")
    env = {**os.environ, "K8SI_URL": api.base_url, "K8SI_API_KEY": API_KEY}
    started = time.monotonic()
    with subprocess.Popen([sys.executable, "-m", "app", "exec", "ticks.sh"], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        first_at = time.monotonic() - started
        rest = process.stdout.read()
        ended_at = time.monotonic() - started
    assert (first, rest) == ("first\n", "second\n")
    assert first_at < ended_at - 1.5, (first_at, ended_at)


def test_status_reports_health_and_pools(api: RunningApp, tmp_path: Path) -> None:
    done = k8si(api, "status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("server     healthy (version ")
    assert lines[1].startswith("ready      healthy: ")
    assert any(line.startswith("languages  ") and "py 3." in line for line in lines)
    pool_rows = [line.split() for line in lines if line.startswith("  py ")]
    assert pool_rows and pool_rows[0][1] == "1", "py pool target 1"
    as_json = k8si(api, "status", "--json", cwd=tmp_path)
    assert '"pools"' in as_json.stdout and as_json.returncode == 0


def test_url_and_key_flags_and_their_errors(api: RunningApp, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print('flags')\n")
    flags = k8si(api, "exec", "a.py", "--url", api.base_url, "--api-key", API_KEY,
                 cwd=tmp_path, env_key=False)
    assert (flags.returncode, flags.stdout) == (0, "flags\n")
    no_key = k8si(api, "exec", "a.py", cwd=tmp_path, env_key=False)
    assert no_key.returncode == 2 and "no API key" in no_key.stderr
    wrong = k8si(api, "status", "--api-key", "not-a-key", cwd=tmp_path, env_key=False)
    assert wrong.returncode == 2 and "401" in wrong.stderr
    missing = k8si(api, "exec", "nope.py", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@pytest.mark.parametrize(("body", "expected"), [
    (["event: stdout", 'data: {"text":"a"}', "", ": keep-alive", "",
      "event: result", "data: {}", ""], [("stdout", '{"text":"a"}'), ("result", "{}")]),
    (["data: one", "data: two", ""], [("message", "one\ntwo")]),
    (["event: x", "data:no-space"], [("x", "no-space")]),
])
def test_sse_parsing(body: list[str], expected: list[tuple[str, str]]) -> None:
    assert list(iter_sse(body)) == expected
