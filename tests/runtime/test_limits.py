"""The limits of runtime sessions, each on both sides: kept sandboxes per tenant and in
total (over a cap the least recently used one is checkpointed-and-released, never a
refusal, and its next call is ``restored`` with nothing lost), one execution at a time
per runtime session (others wait, up to ``QUEUE_TIMEOUT``, then 429
``runtime_session_busy``), the idle TTL and the maximum age (waited for by watching
the backend, never by timing assertions)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from app.runtime_sessions.operators import end
from app.runtime_sessions.records import record_key
from app.settings import TenantLimits, TenantSettings
from tests.conftest import OTHER_KEY, RunningApp, free_port, start_app, stop_app

from .conftest import (
    EXPECTED,
    GENEROUS,
    drop,
    kept,
    kept_of,
    run,
    stateful_api_fixture,
    stateful_app,
    wait_until_released,
)

MARK = "open('/mnt/data/mark.txt','w').write('{hint}')\nprint('ok')"
CHECK = "print(open('/mnt/data/mark.txt').read())"


#: Two kept sandboxes per tenant, three in all; a short queue timeout.
capped_api = stateful_api_fixture(attrs.evolve(GENEROUS, per_tenant=2, total=3),
                                  queue_timeout=3)


def _end_all(app: RunningApp) -> None:
    for info in kept(app):
        app.run(app.app.state.backend.drop(info.location))


def test_the_tenant_cap(capped_api: RunningApp) -> None:
    _end_all(capped_api)
    ids = {hint: run(capped_api, hint, MARK.format(hint=hint))["runtime_session_id"]
           for hint in ("t-one", "t-two")}
    # at the cap: both kept, both reused
    assert len(kept(capped_api, "default")) == 2
    for hint in ("t-one", "t-two"):
        assert run(capped_api, hint, CHECK)["runtime_status"] == "reused"
    # over it: the least recently used (t-one) is released, nobody is refused
    third = run(capped_api, "t-three", MARK.format(hint="t-three"))
    assert third["runtime_status"] == "created"
    assert len(kept(capped_api, "default")) == 2
    assert kept_of(capped_api, ids["t-one"]) == []
    again = run(capped_api, "t-one", CHECK)
    assert (again["runtime_status"], again["stdout"]) == ("restored", "t-one\n")


def test_the_total_cap(capped_api: RunningApp) -> None:
    _end_all(capped_api)
    mine = [run(capped_api, hint, MARK.format(hint=hint))["runtime_session_id"]
            for hint in ("all-a", "all-b")]
    theirs = run(capped_api, "all-c", MARK.format(hint="all-c"), key=OTHER_KEY)
    assert len(kept(capped_api)) == 3  # at the total cap: all kept
    assert run(capped_api, "all-a", CHECK)["runtime_status"] == "reused"
    # a fourth (the other tenant's second: under its own cap) goes over the total
    run(capped_api, "all-d", MARK.format(hint="all-d"), key=OTHER_KEY)
    assert len(kept(capped_api)) == 3
    assert kept_of(capped_api, mine[1]) == []  # all-b was the least recently used
    assert kept_of(capped_api, mine[0]) and kept_of(capped_api, theirs["runtime_session_id"])
    again = run(capped_api, "all-b", CHECK)
    assert (again["runtime_status"], again["stdout"]) == ("restored", "all-b\n")


def test_one_execution_at_a_time_the_second_waits(capped_api: RunningApp) -> None:
    run(capped_api, "serial", "open('/mnt/data/order.txt','w').write('')")
    answers: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answers.update(first=run(capped_api, "serial", (
        "import time\ntime.sleep(1.5)\nopen('/mnt/data/order.txt','a').write('first,')"))))
    thread.start()
    _wait_for_lock(capped_api, "serial")  # the first holds the runtime session
    second = run(capped_api, "serial", "open('/mnt/data/order.txt','a').write('second')\n"
                                       "print(open('/mnt/data/order.txt').read())")
    thread.join()
    assert answers["first"]["status"] == "ok"
    assert second["runtime_status"] == "reused"
    assert second["stdout"] == "first,second\n"  # it ran after the first had ended


def test_busy_beyond_the_queue_timeout_is_a_429(capped_api: RunningApp) -> None:
    run(capped_api, "busy", "print(1)")
    answers: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answers.update(
        first=run(capped_api, "busy", "import time\ntime.sleep(8)\nprint('slow')")))
    thread.start()
    _wait_for_lock(capped_api, "busy")
    refused = run(capped_api, "busy", "print(2)", expect=429)
    thread.join()
    assert refused["error"] == "runtime_session_busy" and refused["retry_after_seconds"] >= 1
    assert answers["first"]["stdout"] == "slow\n"


def _wait_for_lock(app: RunningApp, hint: str) -> None:
    """Until an execution of the runtime session holds its lock (bounded)."""
    client, key = app.app.state.valkey, f"k8si:rt:lock:{record_key('default', hint)[8:]}"
    for _ in range(600):
        if app.run(client.exists(key)):
            return
        threading.Event().wait(0.05)
    raise AssertionError("the first execution never took the lock")


# -- the idle TTL and the maximum age ---------------------------------------------------


short_lived_api = stateful_api_fixture(attrs.evolve(GENEROUS, idle_ttl=6, max_age=12))


def test_the_idle_ttl(short_lived_api: RunningApp) -> None:
    first = run(short_lived_api, "idle", MARK.format(hint="idle"))
    assert run(short_lived_api, "idle", CHECK)["runtime_status"] == "reused"  # within it
    wait_until_released(short_lived_api, first["runtime_session_id"])  # past it
    again = run(short_lived_api, "idle", CHECK)
    assert (again["runtime_status"], again["stdout"]) == ("restored", "idle\n")


def test_the_maximum_age(short_lived_api: RunningApp) -> None:
    first = run(short_lived_api, "aged", MARK.format(hint="aged"))
    statuses = []
    # used more often than the idle TTL: reused until the maximum age ends the sandbox
    while True:
        answer = run(short_lived_api, "aged", CHECK)
        statuses.append(answer["runtime_status"])
        assert answer["stdout"] == "aged\n"
        if answer["runtime_status"] != "reused":
            break
        assert len(statuses) < 200
        wait_or_released = kept_of(short_lived_api, first["runtime_session_id"])
        if wait_or_released:
            threading.Event().wait(1.0)
    assert statuses[0] == "reused" and statuses[-1] == "restored"


# -- checkpoint blobs count against the tenant's storage quota ---------------------------


#: A tenant of this test's own: the suite's Valkey is shared, and other tests' files
#: count against the default tenant's storage.
QUOTA_TENANT = f"quota{uuid.uuid4().hex[:12]}"
QUOTA_KEY = "quota-tenant-key-0123456789"


#: A storage quota of 3 MiB per tenant.
quota_api = stateful_api_fixture(
    api_keys=(f"{QUOTA_TENANT}:{QUOTA_KEY}",),
    tenants=TenantSettings(defaults=TenantLimits(0, 0, 3 * 1024 * 1024, 0, 0, 0),
                           auth_failures_per_window=0))


BIG = "open('/mnt/data/big.bin','wb').write(b'{c}' * ({mib} * 1024 * 1024))"


def _usage(app: RunningApp) -> int:
    quotas = app.app.state.quotas
    used: tuple[int, int] = app.run(quotas.usage(QUOTA_TENANT))
    return used[0]


def test_checkpoint_blobs_count_against_the_storage_quota(quota_api: RunningApp) -> None:
    before = _usage(quota_api)
    assert before == 0  # a tenant of its own: nothing else counts here
    # within the quota: the 2 MiB file (over MAX_OUTPUT_FILE_SIZE, so no output) is a blob
    first = run(quota_api, "quota-conv", BIG.format(c="a", mib=2), key=QUOTA_KEY)
    assert _usage(quota_api) == before + 2 * 1024 * 1024
    # past it: another 2 MiB blob is refused; the answer is still the code's, and the
    # previous checkpoint stays in force
    second = run(quota_api, "quota-conv", BIG.format(c="b", mib=2) + "\nprint('ran')",
                 key=QUOTA_KEY)
    assert (second["status"], second["stdout"]) == ("ok", "ran\n")
    assert _usage(quota_api) == before + 2 * 1024 * 1024
    drop(quota_api, first["runtime_session_id"])
    back = run(quota_api, "quota-conv", "print(open('/mnt/data/big.bin','rb').read(1))",
               key=QUOTA_KEY)
    assert (back["runtime_status"], back["stdout"]) == ("restored", "b'a'\n")
    # ending the runtime session gives the bytes back
    assert quota_api.run(end(quota_api.app.state.exec_service.runtime,
                             first["runtime_session_id"]))
    assert _usage(quota_api) == before


def test_an_api_restart_loses_no_workspace(tmp_path_factory: pytest.TempPathFactory,
                                           runtime_dir: Path, valkey_url: str) -> None:
    """The local backend's kept sandboxes end with its process; the records and
    checkpoints do not: the next call after a restart is restored."""
    running, server, thread = stateful_app(tmp_path_factory, runtime_dir, valkey_url)
    try:
        made = run(running, "restart-conv", MARK.format(hint="restart-conv"))
    finally:
        stop_app(server, thread)
    again, server, thread = start_app(attrs.evolve(running.settings, port=free_port()))
    try:
        after = run(again, "restart-conv", CHECK)
        assert (after["runtime_status"], after["stdout"]) == ("restored", "restart-conv\n")
        assert after["runtime_session_id"] == made["runtime_session_id"]
    finally:
        stop_app(server, thread)


def test_a_busy_runtime_session_is_never_the_caps_victim(capped_api: RunningApp) -> None:
    """Over the tenant cap the least recently used kept sandbox is released, unless its
    runtime session is executing (here: a programmatic run paused, holding it): the next
    one is released instead."""
    _end_all(capped_api)
    ids = {hint: run(capped_api, hint, MARK.format(hint=hint))["runtime_session_id"]
           for hint in ("busy-a", "busy-b")}
    headers = {EXPECTED: "stateful"}
    with capped_api.client() as http:
        paused = http.post("/exec/programmatic", headers=headers, json={
            "runtime_session_hint": "busy-a", "code": "print(await add(a=1, b=1))",
            "tools": [{"name": "add", "parameters": {"type": "object"}}]}).json()
    assert paused["status"] == "tool_call_required", paused
    run(capped_api, "busy-b", CHECK)  # busy-a is now the least recently used
    run(capped_api, "busy-c", MARK.format(hint="busy-c"))  # over the cap
    assert kept_of(capped_api, ids["busy-b"]) == []  # released instead of busy-a
    with capped_api.client() as http:
        done = http.post("/exec/programmatic", headers=headers, json={
            "continuation_token": paused["continuation_token"],
            "tool_results": [{"call_id": paused["tool_calls"][0]["id"], "result": 2}]}).json()
    assert (done["status"], done["runtime_status"]) == ("completed", "reused"), done
    again = run(capped_api, "busy-b", CHECK)
    assert (again["runtime_status"], again["stdout"]) == ("restored", "busy-b\n")
