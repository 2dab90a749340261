"""Programmatic tool calling on the Kubernetes backend, against the real control plane:
the paused pod stays claimed (lease annotations updated), a different replica resumes
it by its IP, and it is deleted at the end; a paused pod whose lease ends is reaped."""

from __future__ import annotations

import time
import uuid

import attrs
import httpx
import pytest

from app.backends.kubernetes import KubernetesBackend
from app.backends.kubernetes.held import executor_port, executor_url
from sidecar.contract import TOKEN_HEADER
from tests.cluster import Namespace
from tests.conftest import RunningApp
from tests.k8s.conftest import AppFactory, ready_warm

from .helpers import TOOLS, answer_calls, step

CLAIMED = "k8si.io/state=claimed"
CODE = ("x=$(add '{\"a\": 2, \"b\": 3}')\necho \"host=$HOSTNAME x=$x\"\n"
        "y=$(mul \"{\\\"a\\\": $x, \\\"b\\\": 10}\")\necho \"y=$y\"")


def test_a_paused_pod_is_resumed_by_another_replica(kube: Namespace,
                                                    k8s_app_factory: AppFactory) -> None:
    first, second = k8s_app_factory({"bash": 1}), k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    with first.client() as client:
        answer = step(client, {"lang": "bash", "code": CODE, "tools": TOOLS})
    assert answer["status"] == "tool_call_required", answer
    [pod] = kube.objects("pods", label_selector=CLAIMED)
    name, annotations = pod["metadata"]["name"], pod["metadata"]["annotations"]
    assert annotations["k8si.io/paused"] == "true"
    assert float(annotations["k8si.io/expires-at"]) > time.time()
    first_backend = first.app.state.backend
    assert isinstance(first_backend, KubernetesBackend)
    assert annotations["k8si.io/claimed-by"] == first_backend.replica
    assert first.run(first_backend.health())["held"] == 0, \
        "the pausing replica no longer holds the pod"

    with second.client() as client:  # round 2 and the end, on the other replica
        answer = step(client, {"continuation_token": answer["continuation_token"],
                               "tool_results": answer_calls(answer["tool_calls"])})
        assert answer["status"] == "tool_call_required", answer
        resumed = kube.get("pods", name)
        assert resumed is not None
        assert resumed["metadata"]["annotations"]["k8si.io/claimed-by"] == \
            second.app.state.backend.replica
        done = step(client, {"continuation_token": answer["continuation_token"],
                             "tool_results": answer_calls(answer["tool_calls"])})
    assert done["status"] == "completed", done
    assert done["stdout"] == f"host={name} x=5\ny=50\n"
    kube.wait_for(lambda: kube.get("pods", name) is None, message="the used pod deleted")
    assert not kube.objects("pods", label_selector=CLAIMED)


def test_a_claimed_pod_serves_only_the_api(kube: Namespace,
                                           k8s_app_factory: AppFactory) -> None:
    """The attack: a neighbour that reaches a pod's executor (user code in another
    sandbox, on a cluster whose NetworkPolicy is not enforced) plants files in a warm
    pod, or reads a claimed pod's files, cancels or continues its paused run. Every
    route but the health probe refuses it (403); the API's replicas, each deriving the
    pod's token from their shared secret, go on."""
    first, second = k8s_app_factory({"bash": 1}), k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    default_port = first.app.state.backend.config.executor_port
    for warm in kube.objects("pods", label_selector="k8si.io/state=warm"):
        # Before any claim: nothing can be planted for the next tenant's code to run.
        url = executor_url(warm["status"]["podIP"], executor_port("pod", warm, default_port))
        with httpx.Client(base_url=url, timeout=10) as neighbour:
            assert neighbour.put("/files/lib.sh", content=b"echo planted").status_code == 403
            assert neighbour.get("/files").status_code == 403
    code = "echo tenant-secret > secret.txt\n" + CODE
    with first.client() as client:
        answer = step(client, {"lang": "bash", "code": code, "tools": TOOLS})
    assert answer["status"] == "tool_call_required", answer
    location = first.app.state.programmatic_service.tokens.read(
        answer["continuation_token"], "default").location
    _, name, host, _ = location.split("/")
    pod = kube.get("pods", name)
    assert pod is not None
    url = executor_url(host, executor_port("pod", pod, default_port))
    with httpx.Client(base_url=url, timeout=10) as neighbour:
        assert neighbour.get("/health").status_code == 200  # the readiness probe's
        for headers in ({}, {TOKEN_HEADER: "guessed-" + "g" * 40}):
            for method, path, body in (
                    ("GET", "/files", None), ("GET", "/files/secret.txt", None),
                    ("POST", "/execute/cancel", {}),
                    ("POST", "/execute/continue", {"tool_results": []}),
                    ("POST", "/execute", {"lang": "bash", "code": "cat secret.txt"}),
                    ("PUT", "/files/planted.txt", None)):
                refused = neighbour.request(method, path, json=body, headers=headers)
                assert refused.status_code == 403, (method, path, refused.text)
                assert b"tenant-secret" not in refused.content

    with second.client() as client:  # the run goes on, on the other replica
        answer = step(client, {"continuation_token": answer["continuation_token"],
                               "tool_results": answer_calls(answer["tool_calls"])})
        assert answer["status"] == "tool_call_required", answer
        done = step(client, {"continuation_token": answer["continuation_token"],
                             "tool_results": answer_calls(answer["tool_calls"])})
    assert done["status"] == "completed", done
    assert done["stdout"] == f"host={name} x=5\ny=50\n"
    assert [f["name"] for f in done["files"]] == ["secret.txt"], done["files"]


def test_a_paused_pod_whose_lease_ended_is_reaped(kube: Namespace,
                                                  k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    with app.client() as client:
        answer = step(client, {"lang": "bash", "code": CODE, "tools": TOOLS})
        [pod] = kube.objects("pods", label_selector=CLAIMED)
        name = pod["metadata"]["name"]
        # the lease ends now (as PTC_LEASE_SECONDS would): the reaper of any replica acts
        ended = kube.cluster.admin.patch(
            kube.path("pods", name), headers={"Content-Type": "application/json-patch+json"},
            json=[{"op": "replace", "path": "/metadata/annotations/k8si.io~1expires-at",
                   "value": f"{time.time() - 1:.3f}"}])
        assert ended.status_code == 200, ended.text
        kube.wait_for(lambda: kube.get("pods", name) is None, timeout=30,
                      message="the paused pod reaped")
        refused = step(client, {"continuation_token": answer["continuation_token"],
                                "tool_results": answer_calls(answer["tool_calls"])})
    assert refused["status"] == "error" and "gone" in refused["error"], refused


def _forged(app: RunningApp, token: str, **changes: str) -> str:
    """The token, re-signed with changes (as a stale or reused location would read)."""
    tokens = app.app.state.programmatic_service.tokens
    return str(tokens.issue(attrs.evolve(tokens.read(token, "default"), **changes)))


@pytest.mark.parametrize("pools", [{"bash": 1}, {"bash": 0}], ids=["pod", "job"])
def test_a_location_names_the_pod_itself(kube: Namespace, k8s_app_factory: AppFactory,
                                         pools: dict[str, int]) -> None:
    """A location is the pod's UID as well as its IP: a pod (or a Job's pod) that is not
    that very one, running, is never resumed or cancelled, and the apiserver's words stay
    in the log."""
    app = k8s_app_factory(pools)
    if pools["bash"]:
        kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    request_id = f"k8s-uid-{uuid.uuid4()}"  # request ids are one request's own
    with app.client() as client:
        answer = step(client, {"lang": "bash", "code": CODE, "tools": TOOLS},
                      **{"X-LibreChat-Code-Request-ID": request_id})
        assert answer["status"] == "tool_call_required", answer
        token = answer["continuation_token"]
        location = app.app.state.programmatic_service.tokens.read(token, "default").location
        kind, name, host, uid = location.split("/")
        assert kind == ("pod" if pools["bash"] else "job") and uid
        pod = (kube.get("pods", name) if kind == "pod" else
               kube.objects("pods", label_selector=f"job-name={name}")[0])
        assert pod is not None and uid == pod["metadata"]["uid"]
        for other in (f"{kind}/{name}/{host}/{uuid.uuid4()}", f"{kind}/{name}/{host}",
                      f"{kind}/{name}/10.255.255.1/{uid}"):
            # (another run id: the refusal frees whatever the location names, if anything)
            forged = _forged(app, token, location=other, nonce=str(uuid.uuid4()),
                             run_id=str(uuid.uuid4()))
            refused = step(client, {"continuation_token": forged,
                                    "tool_results": answer_calls(answer["tool_calls"])})
            assert refused["status"] == "error" and "gone" in refused["error"], refused
        answer = step(client, {"continuation_token": token,
                               "tool_results": answer_calls(answer["tool_calls"])})
        assert answer["status"] == "tool_call_required", "the real one still resumes"
        done = step(client, {"continuation_token": answer["continuation_token"],
                             "tool_results": answer_calls(answer["tool_calls"])},
                    **{"X-LibreChat-Code-Request-ID": request_id})
        assert done["status"] == "completed", done
        cancelled = client.post("/exec/programmatic/cancel", json={"request_id": request_id})
        assert cancelled.json() == {"cancelled": False}, "an ended run is not cancelled"
