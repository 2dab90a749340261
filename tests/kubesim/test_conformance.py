"""Conformance of the emulated apiserver: each behaviour the backend relies on, pinned.

Bodies and codes are the apiserver's (``shared/spec/kubernetes.md``): the generic
422 of a failed JSON-patch ``test``, 409 Conflict on a stale resourceVersion, 404
and AlreadyExists Status bodies, the label/field selector grammar, one global
resourceVersion, and watches that resume, bookmark and expire with 410.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Pod

from .patch import PatchError, apply_json_patch
from .server import KubeSim
from .testing import deployment_manifest, http, pod_manifest, pod_ready, run_kr8s

PODS = "/api/v1/namespaces/k8si-test/pods"
STATE = "k8si.io/state"


def create_pods(sim: KubeSim, *pods: dict[str, Any]) -> list[dict[str, Any]]:
    with http(sim) as client:
        created = [client.post(PODS, json=p) for p in pods]
    assert [r.status_code for r in created] == [201] * len(pods), [r.text for r in created]
    return [r.json() for r in created]


def test_kr8s_connects_through_the_generated_kubeconfig(fake_kubesim: KubeSim) -> None:
    async def scenario(api: kr8s.asyncio.Api) -> tuple[str, list[str]]:
        version = await api.version()
        await Pod(pod_manifest("hello", {"app": "x"}), api=api).create()
        names = [p.name async for p in Pod.list(api=api, namespace=fake_kubesim.namespace)
                 if isinstance(p, Pod)]
        return str(version["gitVersion"]), names

    version, names = run_kr8s(fake_kubesim, scenario)
    assert version.startswith("v1.") and names == ["hello"]
    verbs = [(r.method, r.verb, r.resource) for r in fake_kubesim.requests]
    # /version at connect and for api.version(); no discovery round trips for classes.
    assert verbs == [("GET", "discovery", None), ("GET", "discovery", None),
                     ("POST", "create", "pods"), ("GET", "list", "pods")]
    with http(fake_kubesim) as client:
        assert client.get("/api").json()["versions"] == ["v1"]
        groups = {g["name"] for g in client.get("/apis").json()["groups"]}
        assert {"apps", "batch"} <= groups
        names_v1 = {r["name"] for r in client.get("/api/v1").json()["resources"]}
        assert {"pods", "pods/status"} <= names_v1


def test_failed_json_patch_test_answers_the_generic_422(fake_kubesim: KubeSim) -> None:
    (pod,) = create_pods(fake_kubesim, pod_manifest("p", {STATE: "claimed"}))
    with http(fake_kubesim) as client:
        response = client.patch(
            f"{PODS}/p", headers={"Content-Type": "application/json-patch+json"},
            content=json.dumps([{"op": "test", "path": "/metadata/labels/k8si.io~1state",
                                 "value": "warm"},
                                {"op": "replace", "path": "/metadata/labels/k8si.io~1state",
                                 "value": "claimed"}]))
        after = client.get(f"{PODS}/p").json()
    assert response.status_code == 422
    assert response.text == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
        '"the server rejected our request due to an error in our request","reason":'
        '"Invalid","details":{},"code":422}')
    assert after["metadata"]["labels"] == {STATE: "claimed"}
    assert after["metadata"]["resourceVersion"] >= pod["metadata"]["resourceVersion"]


def test_json_pointer_escapes_reach_slash_and_tilde_keys(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, pod_manifest("p", {STATE: "warm"}))
    patch = [{"op": "test", "path": "/metadata/labels/k8si.io~1state", "value": "warm"},
             {"op": "replace", "path": "/metadata/labels/k8si.io~1state", "value": "claimed"},
             {"op": "add", "path": "/metadata/annotations", "value": {}},
             {"op": "add", "path": "/metadata/annotations/k8si.io~1expires-at", "value": "1"}]
    with http(fake_kubesim) as client:
        response = client.patch(f"{PODS}/p", content=json.dumps(patch),
                                headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 200, response.text
    meta = response.json()["metadata"]
    assert meta["labels"] == {STATE: "claimed"}
    assert meta["annotations"] == {"k8si.io/expires-at": "1"}
    # ~0 is "~", and "~01" is the literal "~1" (decoded in that order, RFC 6901).
    document = {"a~b": 1, "c~1d": 2}
    assert apply_json_patch(document, [{"op": "test", "path": "/a~0b", "value": 1},
                                       {"op": "test", "path": "/c~01d", "value": 2}])
    with pytest.raises(PatchError):
        apply_json_patch(document, [{"op": "test", "path": "/a~0b", "value": 2}])


def test_of_concurrent_claimers_exactly_one_wins(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, pod_manifest("warm-1", {STATE: "warm"}))
    fake_kubesim.wait_for(lambda: pod_ready(fake_kubesim.get("pods", "warm-1")))

    async def claim(api: kr8s.asyncio.Api, session: int) -> int:
        pod = Pod({"metadata": {"name": "warm-1", "namespace": "k8si-test"}}, api=api)
        try:
            await pod.patch([
                {"op": "test", "path": "/metadata/labels/k8si.io~1state", "value": "warm"},
                {"op": "replace", "path": "/metadata/labels/k8si.io~1state",
                 "value": "claimed"},
                {"op": "add", "path": "/metadata/labels/k8si.io~1session",
                 "value": f"s{session}"}], type="json")
        except kr8s.ServerError as error:
            assert error.response is not None
            return error.response.status_code
        return 200

    async def scenario(api: kr8s.asyncio.Api) -> list[int]:
        return list(await asyncio.gather(*(claim(api, i) for i in range(16))))

    codes = run_kr8s(fake_kubesim, scenario)
    assert sorted(codes) == [200] + [422] * 15
    pod = fake_kubesim.get("pods", "warm-1")
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert labels[STATE] == "claimed" and labels["k8si.io/session"] == f"s{codes.index(200)}"


def test_merge_patch_with_a_stale_resource_version_conflicts(fake_kubesim: KubeSim) -> None:
    (pod,) = create_pods(fake_kubesim, pod_manifest("p", {STATE: "warm"}))
    stale = pod["metadata"]["resourceVersion"]
    fake_kubesim.wait_for(lambda: pod_ready(fake_kubesim.get("pods", "p")))  # kubelet writes
    merge = {"Content-Type": "application/merge-patch+json"}
    with http(fake_kubesim) as client:
        conflict = client.patch(f"{PODS}/p", headers=merge, content=json.dumps(
            {"metadata": {"resourceVersion": stale, "labels": {STATE: "claimed"}}}))
        current = client.get(f"{PODS}/p").json()["metadata"]["resourceVersion"]
        fresh = client.patch(f"{PODS}/p", headers=merge, content=json.dumps(
            {"metadata": {"resourceVersion": current, "labels": {STATE: "claimed"}}}))
    assert conflict.status_code == 409
    assert conflict.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on pods "p": the object has been modified; '
                   "please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "p", "kind": "pods"}, "code": 409}
    assert fresh.status_code == 200
    assert int(fresh.json()["metadata"]["resourceVersion"]) > int(current)


def test_one_global_resource_version_bumped_by_every_write(fake_kubesim: KubeSim) -> None:
    with http(fake_kubesim) as client:
        pods = [client.post(PODS, json=pod_manifest(f"p{i}", {})).json() for i in range(3)]
        deployment = client.post("/apis/apps/v1/namespaces/k8si-test/deployments",
                                 json=deployment_manifest("d", 0, {"pool": "d"})).json()
        versions = [int(o["metadata"]["resourceVersion"]) for o in [*pods, deployment]]
        assert versions == sorted(set(versions))  # one counter across kinds
        head = int(client.get(PODS).json()["metadata"]["resourceVersion"])
        assert head >= versions[-1]
        current = client.get(f"{PODS}/p0").json()["metadata"]["resourceVersion"]
        noop = client.patch(f"{PODS}/p0", content="{}",
                            headers={"Content-Type": "application/merge-patch+json"})
        assert noop.json()["metadata"]["resourceVersion"] == current  # no write, no bump
        meta = pods[0]["metadata"]
        assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1


@pytest.mark.parametrize("selector,expected", [
    ("", ["a", "b", "c", "d"]),
    ("pool=py", ["a", "b"]),
    ("pool==py", ["a", "b"]),
    ("pool!=py", ["c", "d"]),  # also matches d, which has no pool label
    ("pool in (py,bash)", ["a", "b", "c"]),
    ("pool notin (py)", ["c", "d"]),
    ("k8si.io/state", ["a", "c"]),
    ("!k8si.io/state", ["b", "d"]),
    ("pool=py,k8si.io/state=warm", ["a"]),
    ("pool in (py), !k8si.io/state", ["b"]),
    ("k8si.io/state in (warm, claimed),pool notin (bash)", ["a"]),
    ("tier>2", ["d"]),
    ("tier<2", ["c"]),
])
def test_label_selector_grammar(fake_kubesim: KubeSim, selector: str,
                                expected: list[str]) -> None:
    create_pods(fake_kubesim,
                pod_manifest("a", {"pool": "py", STATE: "warm"}),
                pod_manifest("b", {"pool": "py"}),
                pod_manifest("c", {"pool": "bash", STATE: "claimed", "tier": "1"}),
                pod_manifest("d", {"tier": "3"}))
    with http(fake_kubesim) as client:
        response = client.get(PODS, params={"labelSelector": selector})
    assert response.status_code == 200, response.text
    assert [p["metadata"]["name"] for p in response.json()["items"]] == expected


@pytest.mark.parametrize("selector", ["pool in", "pool in ()", "=x", "pool=a b", "a:b=c",
                                      "pool=(x)", "!pool=x"])
def test_malformed_label_selectors_are_bad_requests(fake_kubesim: KubeSim,
                                                    selector: str) -> None:
    with http(fake_kubesim) as client:
        response = client.get(PODS, params={"labelSelector": selector})
    assert response.status_code == 400, selector
    assert response.json()["reason"] == "BadRequest"


def test_field_selectors(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, pod_manifest("runs", {"k": "v"}),
                pod_manifest("fails", {"k": "v"},
                             annotations={"kubesim.k8si.io/fail-start": "true"}))
    fake_kubesim.wait_for(lambda: pod_ready(fake_kubesim.get("pods", "runs")))
    fake_kubesim.wait_for(lambda: (fake_kubesim.get("pods", "fails") or {}).get(
        "status", {}).get("phase") == "Failed")
    with http(fake_kubesim) as client:
        def names(selector: str) -> list[str]:
            response = client.get(PODS, params={"fieldSelector": selector})
            assert response.status_code == 200, response.text
            return [p["metadata"]["name"] for p in response.json()["items"]]
        assert names("status.phase=Running") == ["runs"]
        assert names("status.phase!=Running") == ["fails"]
        assert names("metadata.name=fails") == ["fails"]
        assert names("metadata.name==runs,status.phase=Running") == ["runs"]
        unsupported = client.get(PODS, params={"fieldSelector": "metadata.labels=x"})
        assert unsupported.status_code == 400
        assert "field label not supported: metadata.labels" in unsupported.json()["message"]


def test_not_found_and_already_exists_bodies(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, pod_manifest("p", {}))
    with http(fake_kubesim) as client:
        missing = client.get(f"{PODS}/nope")
        again = client.post(PODS, json=pod_manifest("p", {}))
        deployment = client.delete("/apis/apps/v1/namespaces/k8si-test/deployments/nope")
        bad_label = client.post(PODS, json=pod_manifest("q", {STATE: "2024-01-01T00:00"}))
    assert missing.status_code == 404 and missing.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"}, "code": 404}
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    assert again.json()["message"] == 'pods "p" already exists'
    assert deployment.json()["message"] == 'deployments.apps "nope" not found'
    assert deployment.json()["details"] == {"name": "nope", "group": "apps",
                                            "kind": "deployments"}
    assert bad_label.status_code == 422 and bad_label.json()["reason"] == "Invalid"
    assert bad_label.json()["details"]["causes"][0]["field"] == "metadata.labels"


def watch_lines(sim: KubeSim, params: dict[str, str], count: int) -> tuple[int, list[Any]]:
    """Open a watch, read ``count`` events (or until the stream ends)."""
    events: list[Any] = []
    with http(sim) as client, client.stream("GET", PODS, params={"watch": "true", **params},
                                            timeout=10) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        for line in response.iter_lines():
            events.append(json.loads(line))
            if len(events) >= count:
                break
    return 200, events


def test_watch_resumes_bookmarks_and_answers_410_when_too_old(
        fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    with http(sim) as client:
        start = client.get(PODS).json()["metadata"]["resourceVersion"]
    create_pods(sim, pod_manifest("w", {STATE: "warm"}))
    status, events = watch_lines(sim, {"resourceVersion": start,
                                       "allowWatchBookmarks": "true"}, 2)
    assert status == 200
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]  # create, then scheduling
    assert events[0]["object"]["metadata"]["name"] == "w"
    sim.wait_for(lambda: pod_ready(sim.get("pods", "w")))
    _, (bookmark,) = watch_lines(sim, {"resourceVersion": str(sim.store.rv),
                                       "allowWatchBookmarks": "true"}, 1)
    assert bookmark["type"] == "BOOKMARK" and bookmark["object"]["kind"] == "Pod"
    horizon = sim.compact()
    status, events = watch_lines(sim, {"resourceVersion": start}, 5)
    assert status == 200 and events == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {start} ({horizon})", "reason": "Expired",
        "code": 410}}]
    sim.watch_options.expired_as_status = True
    status, (body,) = watch_lines(sim, {"resourceVersion": start}, 5)
    assert status == 410 and body["reason"] == "Expired" and body["code"] == 410
    # The relist: a list gives a fresh version to watch from.
    with http(sim) as client:
        relisted = client.get(PODS).json()["metadata"]["resourceVersion"]
        client.patch(f"{PODS}/w", headers={"Content-Type": "application/merge-patch+json"},
                     content=json.dumps({"metadata": {"labels": {"x": "y"}}}))
    status, events = watch_lines(sim, {"resourceVersion": relisted}, 1)
    assert status == 200 and events[0]["type"] == "MODIFIED"


def test_an_open_watch_can_expire_mid_stream(fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    result: list[tuple[int, list[Any]]] = []
    reader = threading.Thread(target=lambda: result.append(watch_lines(sim, {}, 5)))
    reader.start()
    sim.wait_for(lambda: sim.call(sim.store.sinks), message="the watch registered")
    assert sim.expire_watches() == 1
    reader.join(10)
    ((status, events),) = result
    assert status == 200 and [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410


def test_a_pod_leaving_a_watched_selection_arrives_as_deleted(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, pod_manifest("w", {STATE: "warm"}))
    fake_kubesim.wait_for(lambda: pod_ready(fake_kubesim.get("pods", "w")))
    since = str(fake_kubesim.store.rv)
    with http(fake_kubesim) as client:
        client.patch(f"{PODS}/w", headers={"Content-Type": "application/merge-patch+json"},
                     content=json.dumps({"metadata": {"labels": {STATE: "claimed"}}}))
    _, events = watch_lines(fake_kubesim, {"resourceVersion": since,
                                           "labelSelector": f"{STATE}=warm"}, 1)
    assert events[0]["type"] == "DELETED"
    assert events[0]["object"]["metadata"]["labels"][STATE] == "warm"  # its previous state
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(since)


def test_pod_updates_keep_to_the_mutable_fields(fake_kubesim: KubeSim) -> None:
    (pod,) = create_pods(fake_kubesim, pod_manifest("p", {STATE: "warm"}))
    with http(fake_kubesim) as client:
        def patch(ops: list[dict[str, Any]]) -> Any:
            return client.patch(f"{PODS}/p", headers={
                "Content-Type": "application/json-patch+json"}, content=json.dumps(ops))
        lease = patch([{"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 60}])
        longer = patch([{"op": "replace", "path": "/spec/activeDeadlineSeconds", "value": 90}])
        shorter = patch([{"op": "replace", "path": "/spec/activeDeadlineSeconds", "value": 30}])
        other = patch([{"op": "replace", "path": "/spec/restartPolicy", "value": "Always"}])
        status = patch([{"op": "add", "path": "/status/phase", "value": "Succeeded"}])
        stale = client.put(f"{PODS}/p", json=pod)  # carries the creation's resourceVersion
    assert lease.status_code == 200 and shorter.status_code == 200
    assert longer.status_code == 422 and other.status_code == 422
    assert other.json()["details"]["causes"][0]["field"] == "spec"
    assert status.status_code == 200 and status.json()["status"]["phase"] != "Succeeded"
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"


def test_lists_page_with_limit_and_continue(fake_kubesim: KubeSim) -> None:
    create_pods(fake_kubesim, *(pod_manifest(f"p{i}", {"k": "v"}) for i in range(5)))
    names: list[str] = []
    params: dict[str, Any] = {"limit": 2, "labelSelector": "k=v"}
    with http(fake_kubesim) as client:
        while True:
            page = client.get(PODS, params=params).json()
            names += [p["metadata"]["name"] for p in page["items"]]
            if not page["metadata"].get("continue"):
                break
            assert page["metadata"]["remainingItemCount"] == 5 - len(names)
            params["continue"] = page["metadata"]["continue"]
    assert names == [f"p{i}" for i in range(5)]
