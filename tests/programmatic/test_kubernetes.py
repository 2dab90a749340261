"""Programmatic tool calling on the Kubernetes backend, against the real control plane:
the paused pod stays claimed (lease annotations updated), a different replica resumes
it by its IP, and it is deleted at the end; a paused pod whose lease ends is reaped."""

from __future__ import annotations

import time

from app.backends.kubernetes import KubernetesBackend
from tests.cluster import Namespace
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
    assert not first_backend._held, "the pausing replica no longer holds the pod"

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
