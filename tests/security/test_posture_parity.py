"""Posture parity: the zygote's sandboxes are held to the nsjail sandboxes' posture.

One probe (``posture_probe.PROBE``) reads, as user code, everything that makes up a
sandbox's posture; it runs in a sandbox of each factory and every difference must be
declared in ``ALLOWED`` with the reason it is harmless. A new difference fails the
test, whichever side it favours.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningApp, make_settings, start_app, stop_app, wait_for_factory
from tests.security.conftest import FACTORIES
from tests.security.posture_probe import PROBE

pytestmark = [pytest.mark.attack("isolation and secrets"), pytest.mark.sandbox]

#: Differences between the factories that are reviewed and harmless: the fact's path
#: (dotted) and why.
ALLOWED: dict[str, str] = {}


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
              valkey_url: str) -> Iterator[dict[str, RunningApp]]:
    """An API of each factory at once (the module's ``api`` gives one at a time)."""
    started = {}
    try:
        for name in FACTORIES:
            settings = make_settings(tmp_path_factory.mktemp(f"parity-{name}"), runtime_dir,
                                     valkey_url, sandbox_factory=name, pool_sizes={"py": 1})
            started[name] = start_app(settings)
            wait_for_factory(started[name][0], name)
        yield {name: app for name, (app, _, _) in started.items()}
    finally:
        for _, server, thread in started.values():
            stop_app(server, thread)


def probe(app: RunningApp) -> dict[str, Any]:
    """The posture of one fresh sandbox, with what is meant to differ per sandbox made
    comparable: namespaces as ``own``/``host`` (against this process's), fds by kind
    (``pipe:[inode]`` -> ``pipe``), and the uid checked here, then left out."""
    with app.client() as client:
        body = client.post("/exec", json={"lang": "py", "code": PROBE}).json()
    assert body["status"] == "ok", body
    facts: dict[str, Any] = json.loads(body["stdout"])
    identity = facts.pop("identity")
    assert identity["uid"] == identity["euid"] == identity["gid"] >= 1000, identity
    assert identity["groups"] == [], identity  # no supplementary groups
    facts["identity"] = {"user": identity["user"], "uid": "own unprivileged"}
    facts["namespaces"] = {
        name: "host" if os.readlink(f"/proc/self/ns/{name}") == link else "own"
        for name, link in facts["namespaces"].items()}
    facts["fds"] = {fd: re.sub(r":\[\d+\]$", "", target)
                    for fd, target in facts["fds"].items()}
    facts["uid"] = identity["uid"]
    return facts


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def test_both_factories_hold_the_same_posture(factories: dict[str, RunningApp]) -> None:
    first = {name: probe(app) for name, app in factories.items()}
    second = {name: probe(app) for name, app in factories.items()}
    uids = {facts.pop("uid") for facts in (*first.values(), *second.values())}
    assert len(uids) == 4, "every sandbox has a uid of its own, across factories too"
    for facts in first.values():
        assert facts["namespaces"]["net"] == facts["namespaces"]["pid"] == "own"
        assert facts["oom_score_adj"] == "1000" and facts["no_new_privs"] == "1"
    nsjail, zygote = flatten(first["nsjail"]), flatten(first["zygote"])
    # the probe read every part: 60 syscall verdicts, 45 families, the mounts...
    assert len([k for k in nsjail if k.startswith("syscalls.")]) >= 50
    assert len([k for k in nsjail if k.startswith("socket_families.")]) == 45
    assert len([k for k in nsjail if k.startswith("mounts.")]) >= 40
    differences = {key: (nsjail.get(key, "<absent>"), zygote.get(key, "<absent>"))
                   for key in sorted(set(nsjail) | set(zygote))
                   if nsjail.get(key, "<absent>") != zygote.get(key, "<absent>")}
    undeclared = {key: pair for key, pair in differences.items()
                  if not any(key == allowed or key.startswith(f"{allowed}.")
                             for allowed in ALLOWED)}
    assert not undeclared, f"posture differs (nsjail, zygote): {undeclared}"
