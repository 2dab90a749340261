"""Kept sandboxes (runtime sessions) hold the same posture on their later runs, with both
factories, and nothing of an earlier run survives into the next but ``/mnt/data``: no
process (a ``setsid`` double-forked daemon included), nothing in ``/tmp`` or
``/dev/shm``. A kept sandbox is still one tenant's: another tenant's same hint gets a
sandbox of its own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OTHER_KEY, RunningApp, stop_app, wait_for_factory
from tests.runtime.conftest import run, stateful_app
from tests.security.conftest import FACTORIES
from tests.security.posture_probe import PROBE
from tests.security.test_posture_parity import ALLOWED, flatten

pytestmark = [pytest.mark.attack("isolation and secrets"), pytest.mark.sandbox]


@pytest.fixture(scope="module", params=FACTORIES)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             runtime_dir: Path, valkey_url: str) -> Iterator[RunningApp]:
    factory = str(request.param)
    running, server, thread = stateful_app(tmp_path_factory, runtime_dir, valkey_url,
                                           sandbox_factory=factory)
    try:
        wait_for_factory(running, factory)
        yield running
    finally:
        stop_app(server, thread)


def _hint(app: RunningApp, name: str) -> str:
    """Hints of one app's own: the apps of this module share one Valkey."""
    return f"{app.settings.sandbox_factory}-{name}"


def _facts(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["status"] == "ok", answer
    facts: dict[str, Any] = json.loads(answer["stdout"])
    # fds by kind (``pipe:[inode]`` -> ``pipe``): each run has pipes of its own
    facts["fds"] = {fd: re.sub(r":\[\d+\]$", "", target) for fd, target in facts["fds"].items()}
    return flatten(facts)


def test_a_later_run_of_a_kept_sandbox_holds_the_first_runs_posture(
        api: RunningApp) -> None:
    first = run(api, _hint(api, "posture"), PROBE)
    second = run(api, _hint(api, "posture"), PROBE)
    assert (first["runtime_status"], second["runtime_status"]) == ("created", "reused")
    before, after = _facts(first), _facts(second)
    # the same sandbox: the same identity and namespaces; every fact the same
    differences = {key: (before.get(key), after.get(key))
                   for key in sorted(set(before) | set(after))
                   if before.get(key) != after.get(key)
                   and not any(key.startswith(allowed) for allowed in ALLOWED)}
    assert not differences, f"posture changed between runs: {differences}"
    assert after["oom_score_adj"] == "1000" and after["no_new_privs"] == "1"


DAEMON = """
import os, time
open('/tmp/left.txt', 'w').write('x')
if os.path.isdir('/dev/shm'):
    open('/dev/shm/left', 'w').write('y')
os.makedirs('/tmp/locked/deeper')
os.chmod('/tmp/locked', 0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            with open('/mnt/data/daemon.txt', 'a') as f:
                f.write('.')
            time.sleep(0.05)
    os._exit(0)
time.sleep(0.3)
print('started')
"""

AFTER = """
import os, time
others = []
for name in os.listdir('/proc'):
    if name.isdigit() and int(name) not in (1, os.getpid()):
        with open(f'/proc/{name}/stat') as f:
            if f.read().rpartition(')')[2].split()[0] not in ('Z', 'X'):
                others.append(int(name))
size = os.path.getsize('/mnt/data/daemon.txt')
time.sleep(0.3)
print(json.dumps({'others': others, 'tmp': sorted(os.listdir('/tmp')),
                  'shm': sorted(os.listdir('/dev/shm')) if os.path.isdir('/dev/shm') else [],
                  'grew': os.path.getsize('/mnt/data/daemon.txt') != size}))
"""


def test_nothing_but_the_work_dir_survives_into_the_next_run(api: RunningApp) -> None:
    started = run(api, _hint(api, "daemon"), DAEMON)
    assert started["stdout"] == "started\n", started
    after = run(api, _hint(api, "daemon"), "import json\n" + AFTER)
    assert after["runtime_status"] == "reused", after
    seen = json.loads(after["stdout"])
    # /tmp holds only what this run's own executor and warm interpreter made
    assert set(seen.pop("tmp")) <= {".k8si-build", ".matplotlib"}, after
    assert seen == {"others": [], "shm": [], "grew": False}, seen


def test_a_kept_sandbox_serves_one_tenant(api: RunningApp) -> None:
    mine = run(api, _hint(api, "tenant-bound"), "open('/mnt/data/mine.txt','w').write('secret')")
    theirs = run(api, _hint(api, "tenant-bound"), "import os\nprint(os.listdir('/mnt/data'))",
                 key=OTHER_KEY)
    assert theirs["runtime_status"] == "created" and theirs["stdout"] == "[]\n"
    assert theirs["runtime_session_id"] != mine["runtime_session_id"]
