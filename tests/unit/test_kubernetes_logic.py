"""Pure logic of the Kubernetes backend: claim patches, leases, readiness, templates."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from app.backends import lease_for_run
from app.backends.kubernetes.claims import (
    ClaimRequest,
    claim_patch,
    is_ready,
    label_value,
    pointer,
    shuffled_candidates,
    warm_selector,
    won_by,
)
from app.backends.kubernetes.held import Held, executor_port, executor_token, executor_url
from app.backends.kubernetes.reaper import lease_expired
from app.backends.kubernetes.templates import IMAGE_GROUPS, PodTemplates
from app.executor import ExecutorClient
from app.settings import KubernetesSettings
from sidecar.languages import LANGUAGES
from sidecar.protocol import valid_token

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def pod(name: str = "p", ready: bool = True, ip: str | None = "10.0.0.1",
        started: float | None = None, **metadata: Any) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(started or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "labels": {"k8si.io/state": "warm"}, **metadata},
            "status": {"phase": "Running", "podIP": ip, "startTime": stamp,
                       "containerStatuses": [{"ready": ready}],
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_json_pointer_escapes() -> None:
    assert pointer("k8si.io/state") == "k8si.io~1state"
    assert pointer("a~b/c") == "a~0b~1c"


def test_claim_patch_tests_then_replaces_and_records_the_lease() -> None:
    claim = ClaimRequest(session_id="-abc_DEF-0123456789xyz", tenant="acme", replica="r1",
                         lease_seconds=120)
    ops = claim_patch(pod(started=time.time() - 600), claim)
    assert ops[0] == {"op": "test", "path": "/metadata/labels/k8si.io~1state", "value": "warm"}
    assert ops[1] == {"op": "replace", "path": "/metadata/labels/k8si.io~1state",
                      "value": "claimed"}
    labels = {op["path"]: op["value"] for op in ops if op["path"].startswith("/metadata/labels")}
    assert all(LABEL_VALUE.fullmatch(v) and len(v) <= 63 for v in labels.values())
    annotations = {op["path"].rsplit("/", 1)[1]: op["value"] for op in ops
                   if op["path"].startswith("/metadata/annotations/")}
    assert annotations["k8si.io~1session"] == claim.session_id
    assert float(annotations["k8si.io~1expires-at"]) > time.time() + 100
    assert {"op": "add", "path": "/metadata/annotations", "value": {}} in ops
    deadline = next(op["value"] for op in ops if op["path"] == "/spec/activeDeadlineSeconds")
    assert 600 + 120 <= deadline <= 600 + 120 + 5, "the deadline counts from the pod's start"


@pytest.mark.parametrize(("deadline", "hard_end"), [(None, 120), (60, 120), (7200, 7200)])
def test_a_claim_keeps_its_lease_short_and_its_hard_end_apart(deadline: int | None,
                                                              hard_end: int) -> None:
    """A runtime session (or programmatic run) may live up to its deadline, but a replica
    that dies during its first execution leaves it to the reaper after the lease."""
    claim = ClaimRequest(session_id="s" * 21, tenant="acme", replica="r1", lease_seconds=120,
                         deadline_seconds=deadline)
    ops = claim_patch(pod(started=time.time()), claim)
    expires = next(float(op["value"]) for op in ops if op["path"].endswith("expires-at"))
    assert time.time() + 110 <= expires <= time.time() + 121
    active = next(op["value"] for op in ops if op["path"] == "/spec/activeDeadlineSeconds")
    assert hard_end <= active <= hard_end + 5


@pytest.mark.parametrize("value", ["-starts-with-dash", "ends_", "x" * 80, "ok"])
def test_label_values_are_always_valid(value: str) -> None:
    assert LABEL_VALUE.fullmatch(label_value("s", value))
    assert len(label_value("s", value)) <= 63


def test_readiness_filter() -> None:
    assert is_ready(pod())
    assert not is_ready(pod(ready=False))
    assert not is_ready(pod(deletionTimestamp="2026-01-01T00:00:00Z"))
    no_status = pod()
    no_status["status"]["containerStatuses"] = []
    assert not is_ready(no_status)
    candidates = shuffled_candidates([pod("a"), pod("b", ready=False), pod("c", ip=None),
                                      pod("d")])
    assert sorted(p["metadata"]["name"] for p in candidates) == ["a", "d"]


def test_warm_selector() -> None:
    assert warm_selector("py") == {"labelSelector": "k8si.io/pool=py,k8si.io/state=warm",
                                   "fieldSelector": "status.phase=Running"}


def test_lease_expiry() -> None:
    now = time.time()
    assert lease_expired({"metadata": {"annotations": {"k8si.io/expires-at": str(now - 1)}}},
                         now)
    assert not lease_expired({"metadata": {"annotations": {"k8si.io/expires-at":
                                                           str(now + 60)}}}, now)
    assert lease_expired({"metadata": {"annotations": {"k8si.io/expires-at": "garbage"}}}, now)
    old = datetime.fromtimestamp(now - 7200, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert lease_expired({"metadata": {"creationTimestamp": old}}, now)


def test_templates_fill_in_language_image_and_resources() -> None:
    config = KubernetesSettings(images={"java": "registry.example/java:17"},
                                cpu_limit="2", memory_limit="2Gi", runtime_class="gvisor")
    templates = PodTemplates(config)
    assert set(IMAGE_GROUPS) == set(LANGUAGES)
    deployment = templates.pool_deployment("py", replicas=3, target=3)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"] == {"k8si.io/pool": "py",
                                                             "k8si.io/state": "warm"}
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["k8si.io/state"] == "warm"
    container = template["spec"]["containers"][0]
    assert container["args"][:2] == ["--lang", "py"]
    assert container["image"].endswith("runtime-python:0.1.0")
    assert container["resources"]["limits"]["cpu"] == "2"
    assert template["spec"]["runtimeClassName"] == "gvisor"
    assert template["spec"]["automountServiceAccountToken"] is False
    job = templates.job("k8si-java-x", "java", {"k8si.io/session": "sx"}, {"a": "b"})
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == config.job_ttl_seconds
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/java:17"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    # the template itself is never mutated between renders
    assert templates.pool_deployment("go", 1, 1)["spec"]["template"]["spec"]["containers"][
        0]["args"][1] == "go"
    assert templates.template["spec"]["containers"][0]["args"][1] == "py"


def test_a_claim_carries_its_own_nonce_which_tells_a_lost_answer_was_ours() -> None:
    claim = ClaimRequest(session_id="s" * 21, tenant="acme", replica="r1", lease_seconds=120)
    other = ClaimRequest(session_id="s" * 21, tenant="acme", replica="r1", lease_seconds=120)
    assert claim.claim_id != other.claim_id
    ops = claim_patch(pod(), claim)
    annotations = {op["path"].rsplit("/", 1)[1]: op["value"] for op in ops
                   if op["path"].startswith("/metadata/annotations/")}
    claimed = pod(annotations={"k8si.io/claim-id": annotations["k8si.io~1claim-id"]})
    assert won_by(claimed, claim) and not won_by(claimed, other)
    assert not won_by(pod(), claim)


@pytest.mark.parametrize(("timeout", "compile_", "lease"), [
    (60, 60, 180), (600, 60, 720), (0.5, 1, 62), (2.01, 0, 63)])
def test_a_run_asks_for_a_lease_that_covers_it(timeout: float, compile_: int,
                                               lease: int) -> None:
    """Its compile step, the run and a minute of staging: the reaper never ends a run the
    service allowed (the backend's own lease, if longer, is kept)."""
    assert lease_for_run(timeout, compile_) == lease


@pytest.mark.parametrize(("ip", "url"), [("10.1.2.3", "http://10.1.2.3:8080"),
                                         ("fd00::7", "http://[fd00::7]:8080")])
def test_executor_addresses_of_ipv4_and_ipv6_pods(ip: str, url: str) -> None:
    assert executor_url(ip, 8080) == url
    held = Held("pod", "p", ExecutorClient(url), "uid-1")
    assert held.location() == f"pod/p/{ip}/uid-1", "the location names the pod's own IP"


def test_a_job_is_labelled_with_its_language() -> None:
    templates = PodTemplates(KubernetesSettings())
    job = templates.job("k8si-py-abc", "py", {}, {})
    assert job["metadata"]["labels"]["k8si.io/language"] == "py"
    assert job["spec"]["template"]["metadata"]["labels"]["k8si.io/language"] == "py"


def _with_ports(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "executor", "ports": list(ports)}]}}


def test_the_executor_port_is_the_pods_own() -> None:
    """A pod made before a K8S_EXECUTOR_PORT change listens on its own port: read from
    its spec (a Job's from its template), the setting only when it names none."""
    pod = _with_ports({"name": "metrics", "containerPort": 9100},
                      {"name": "executor", "containerPort": 8080})
    assert executor_port("pod", pod, 9090) == 8080
    job = {"spec": {"template": _with_ports({"name": "executor", "containerPort": 7070})}}
    assert executor_port("job", job, 9090) == 7070
    assert executor_port("pod", _with_ports({"containerPort": 8080}), 9090) == 9090
    assert executor_port("pod", {}, 9090) == 9090
    assert executor_port("pod", _with_ports({"name": "executor", "containerPort": "8080"}),
                         9090) == 9090  # not a number: the setting


def test_a_pod_s_executor_token_is_the_same_on_every_replica_and_its_own() -> None:
    """Derived from the replicas' shared secret and the pod's kind, name and UID: any
    replica computes it again from a location; another pod, or another secret, gets
    another token; and the executor takes its shape."""
    key = b"k" * 32
    token = executor_token(key, "pod", "k8si-py-abc", "uid-1")
    assert token == executor_token(key, "pod", "k8si-py-abc", "uid-1")
    assert valid_token(token)
    others = {executor_token(key, "pod", "k8si-py-abc", "uid-2"),
              executor_token(key, "job", "k8si-py-abc", "uid-1"),
              executor_token(key, "pod", "k8si-py-abd", "uid-1"),
              executor_token(b"o" * 32, "pod", "k8si-py-abc", "uid-1")}
    assert token not in others and len(others) == 4
