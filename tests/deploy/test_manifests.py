"""Every overlay: valid objects, Pod Security "restricted" (decided by the real
apiserver's PodSecurity admission), least-privilege RBAC, NetworkPolicies that
isolate the sandboxes, a scale-to-zero Knative Service, and configuration references
that resolve."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from app.backends.kubernetes.templates import LABEL_COMPONENT
from app.settings import Settings
from tests.cluster import KubeCluster

from .admission import (
    POD_SECURITY_REFUSAL,
    RESTRICTED_LABELS,
    as_pod,
    create_pod,
    pod_security_warnings,
    privileged,
    status_message,
)
from .kube import (
    API_NAMESPACE,
    KNATIVE_API,
    PINNED_IMAGE,
    Obj,
    api_workload,
    config_data,
    find,
    label,
    matches,
    one,
    pod_templates,
    pools,
    schema_errors,
)

#: What the Kubernetes backend does (kubernetes.md "Pod security", last paragraph).
EXPECTED_RULES = {
    ("", "pods"): {"get", "list", "watch", "create", "patch", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("apps", "deployments"): {"get", "list", "create", "patch"},
}


def _settings(objects: list[Obj]) -> Settings:
    return Settings.from_env(config_data(objects))


def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: list[Obj]) -> None:
    errors = [error for obj in overlay for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def test_workloads_follow_the_apiserver_rules_the_schema_misses(overlay: list[Obj]) -> None:
    """Deployments/StatefulSets need restartPolicy Always, Jobs Never or OnFailure."""
    wrong = []
    for obj in overlay:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].startswith("k8si-pool-"):
            continue  # test_pool_deployments_use_restart_policy_always (known defect)
        for _, spec in pod_templates(obj):
            policy = spec.get("restartPolicy")
            if obj["kind"] in ("Deployment", "StatefulSet") and policy not in (None, "Always"):
                wrong.append(f"{label(obj)}: restartPolicy {policy}")
            if obj["kind"] in ("Job", "CronJob") and policy not in ("Never", "OnFailure"):
                wrong.append(f"{label(obj)}: restartPolicy {policy}")
    assert not wrong


def test_pool_deployments_use_restart_policy_always(overlay: list[Obj]) -> None:
    assert pools(overlay)
    assert all(p["spec"]["template"]["spec"].get("restartPolicy", "Always") == "Always"
               for p in pools(overlay))


def test_every_pod_template_passes_pod_security_restricted(
        overlay: list[Obj], kube_cluster: KubeCluster) -> None:
    """Each pod an object would make is created (dry run) in its own namespace, which
    enforces "restricted" on the real apiserver: PodSecurity admits every one, and
    refuses the same pod made privileged (the check is live, not vacuous)."""
    pods = [(obj, meta, spec) for obj in overlay for meta, spec in pod_templates(obj)]
    kinds = {obj["kind"] for obj, _, _ in pods}
    assert {"Deployment", "CronJob"} <= kinds
    problems = []
    for obj, meta, spec in pods:
        namespace = obj["metadata"]["namespace"]
        found = kube_cluster.admin.get(f"/api/v1/namespaces/{namespace}").json()
        assert RESTRICTED_LABELS.items() <= found["metadata"]["labels"].items(), namespace
        pod = as_pod(obj, meta, spec)
        admitted = create_pod(kube_cluster, namespace, pod)
        if admitted.status_code != 201 or pod_security_warnings(admitted):
            problems.append(f"{label(obj)}: {admitted.status_code} {status_message(admitted)}")
        refused = create_pod(kube_cluster, namespace, privileged(pod))
        if refused.status_code != 403 or POD_SECURITY_REFUSAL not in status_message(refused):
            problems.append(f"{label(obj)} made privileged: {refused.status_code} "
                            f"{status_message(refused)}")
    assert not problems, "\n".join(problems)


def test_both_namespaces_enforce_restricted(overlay: list[Obj]) -> None:
    settings = _settings(overlay)
    names = {API_NAMESPACE, settings.kubernetes.namespace}
    namespaces = {n["metadata"]["name"]: n for n in find(overlay, "Namespace")}
    assert names <= set(namespaces)
    for name in names:
        labels = namespaces[name]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    placed = {o["metadata"].get("namespace") for o in overlay if o["kind"] != "Namespace"}
    assert placed <= names, "every namespaced object lives in one of the two namespaces"


def test_rbac_is_namespaced_least_privilege(overlay: list[Obj]) -> None:
    assert not find(overlay, "ClusterRole") and not find(overlay, "ClusterRoleBinding")
    settings = _settings(overlay)
    role = one(overlay, "Role")
    assert role["metadata"]["namespace"] == settings.kubernetes.namespace
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_RULES
    binding = one(overlay, "RoleBinding")
    assert binding["metadata"]["namespace"] == settings.kubernetes.namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    account = one(overlay, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    _, api_spec = next(pod_templates(api_workload(overlay)))
    assert api_spec["serviceAccountName"] == account["metadata"]["name"]
    assert api_spec.get("automountServiceAccountToken", True), "the API needs its token"


def _sandbox_labels(overlay: list[Obj]) -> list[dict[str, str]]:
    """Pod labels of every sandbox: each pool's, plus a Job's as the code builds it."""
    from app.backends.kubernetes.templates import PodTemplates

    settings = _settings(overlay)
    templates = PodTemplates(settings.kubernetes)
    labels = [p["spec"]["template"]["metadata"]["labels"] for p in pools(overlay)]
    job = templates.job("k8si-py-test", "py", {"k8si.io/session": "sx"}, {})
    return [*labels, job["spec"]["template"]["metadata"]["labels"]]


def test_the_policy_s_named_port_is_the_executor_s_whatever_its_number(
        overlay: list[Obj]) -> None:
    """The NetworkPolicy admits the port named ``executor``: every sandbox the code
    builds names its executor port so, on ``K8S_EXECUTOR_PORT`` whatever it is."""
    from app.backends.kubernetes.templates import PodTemplates

    settings = _settings(overlay)
    for port in (settings.kubernetes.executor_port, 9090):
        templates = PodTemplates(attrs.evolve(settings.kubernetes, executor_port=port))
        for built in (templates.pool_deployment("py", 1, 1),
                      templates.job("k8si-py-test", "py", {}, {})):
            container = built["spec"]["template"]["spec"]["containers"][0]
            assert container["ports"] == [{"name": "executor", "containerPort": port}]
            assert f":{port}" in container["args"]  # every address, IPv4 and IPv6
    for pool in pools(overlay):
        container = pool["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "executor", "containerPort":
                                       settings.kubernetes.executor_port}]


def test_network_policies_isolate_the_sandboxes(overlay: list[Obj]) -> None:
    settings = _settings(overlay)
    sandbox_ns = settings.kubernetes.namespace
    policies = [p for p in find(overlay, "NetworkPolicy")
                if p["metadata"]["namespace"] == sandbox_ns]
    api_meta, _ = next(pod_templates(api_workload(overlay)))
    api_labels = api_meta["labels"]
    api_ns_labels = {"kubernetes.io/metadata.name": API_NAMESPACE}
    for pod_labels in _sandbox_labels(overlay):
        assert pod_labels[LABEL_COMPONENT] == "sandbox"
        selecting = [p for p in policies if matches(p["spec"]["podSelector"], pod_labels)]
        assert any("Egress" in p["spec"]["policyTypes"] for p in selecting), "egress not denied"
        assert all(not p["spec"].get("egress") for p in selecting
                   if "Egress" in p["spec"]["policyTypes"]), "some egress is allowed"
        ingress = [r for p in selecting if "Ingress" in p["spec"]["policyTypes"]
                   for r in p["spec"].get("ingress") or []]
        assert ingress, "the API could not reach the executor"
        for rule in ingress:
            assert rule["ports"] == [{"protocol": "TCP", "port": "executor"}]
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                assert peer["namespaceSelector"] == {"matchLabels": api_ns_labels}
                assert matches(peer["podSelector"], api_labels)
                assert peer["podSelector"]["matchLabels"], "must not admit every pod"


def test_configuration_references_resolve(overlay: list[Obj]) -> None:
    """Every ConfigMap/Secret a pod uses exists (with its keys): the hashed names of
    kustomize's generators must reach every kind, the Knative Service included."""
    present = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
               for o in overlay if o["kind"] in ("ConfigMap", "Secret")}
    missing = []

    def need(kind: str, namespace: str, name: str, key: str | None = None) -> None:
        obj = present.get((kind, namespace, name))
        if obj is None:
            missing.append(f"{kind} {namespace}/{name}")
        elif key is not None and key not in (obj.get("data") or {}):
            missing.append(f"{kind} {namespace}/{name} key {key}")

    for obj in overlay:
        namespace = obj["metadata"].get("namespace", "")
        for _, spec in pod_templates(obj):
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                for source in container.get("envFrom") or []:
                    if "configMapRef" in source:
                        need("ConfigMap", namespace, source["configMapRef"]["name"])
                    if "secretRef" in source:
                        need("Secret", namespace, source["secretRef"]["name"])
                for env in container.get("env") or []:
                    ref = env.get("valueFrom") or {}
                    if "configMapKeyRef" in ref:
                        need("ConfigMap", namespace, ref["configMapKeyRef"]["name"],
                             ref["configMapKeyRef"]["key"])
                    if "secretKeyRef" in ref:
                        need("Secret", namespace, ref["secretKeyRef"]["name"],
                             ref["secretKeyRef"]["key"])
            for volume in spec.get("volumes") or []:
                if "configMap" in volume:
                    need("ConfigMap", namespace, volume["configMap"]["name"])
                if "secret" in volume:
                    need("Secret", namespace, volume["secret"]["secretName"])
    assert not missing, missing


def test_the_api_is_configured_for_the_cluster(overlay: list[Obj]) -> None:
    data = config_data(overlay)
    settings = Settings.from_env(data)
    assert settings.execution_backend == "kubernetes"
    assert settings.kubernetes.namespace
    secret = next(o for o in find(overlay, "Secret")
                  if o["metadata"]["name"].startswith("k8si-api-secrets-"))
    keys = set(data) | set(secret.get("data") or {})
    # Shared state: never the embedded Valkey or per-replica keys in a cluster.
    assert {"VALKEY_URL", "OBJECT_STORE_URL", "API_KEYS", "STATE_HMAC_KEY"} <= keys
    _, spec = next(pod_templates(api_workload(overlay)))
    container = spec["containers"][0]
    sources = [next(iter(s.values()))["name"] for s in container["envFrom"]]
    assert sources[-1] == secret["metadata"]["name"], "the Secret must come last (it wins)"
    assert container["args"] == ["serve", "--host", "0.0.0.0"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {data["DATA_DIR"], "/tmp"} <= mounts, "writable DATA_DIR and /tmp"


def test_every_configured_variable_is_one_the_api_reads(overlay: list[Obj]) -> None:
    """A misspelt key in config.env or secrets.env would be silently ignored."""
    import app.settings

    source = "".join(path.read_text()
                     for path in Path(app.settings.__file__).parent.glob("*.py"))
    secret = next(o for o in find(overlay, "Secret")
                  if o["metadata"]["name"].startswith("k8si-api-secrets-"))
    keys = set(config_data(overlay)) | set(secret.get("data") or {})
    per_language = re.compile(r"^(POD_POOL|K8S_IMAGE)_[A-Z0-9]+$")
    unknown = [k for k in keys if f'"{k}"' not in source and not per_language.match(k)]
    assert not unknown, unknown


def test_images_are_pinned(overlay: list[Obj]) -> None:
    images = {c["image"] for obj in overlay for _, spec in pod_templates(obj)
              for c in spec.get("containers", []) + spec.get("initContainers", [])}
    assert images
    loose = [i for i in images if not PINNED_IMAGE.match(i) or i.endswith(":latest")]
    assert not loose, loose


def test_knative_service_scales_to_zero(built: dict[str, list[Obj]]) -> None:
    objects = built["knative"]
    ksvc = one(objects, "Service", "k8si-api", KNATIVE_API)
    assert not find(objects, "Deployment", "k8si-api"), "no second copy of the API"
    template = ksvc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
    assert int(annotations["autoscaling.knative.dev/target"]) >= 1
    spec = template["spec"]
    assert isinstance(spec["containerConcurrency"], int) and spec["containerConcurrency"] > 0
    settings = _settings(objects)
    # The longest /exec the backend allows: a slot (QUEUE_TIMEOUT), a cold Job start
    # (QUEUE_TIMEOUT + COMPILE_TIMEOUT), its executor's readiness (30 s), then compile
    # and run; Knative's default max-revision-timeout-seconds is 600.
    longest = (2 * settings.queue_timeout + settings.compile_timeout + 30
               + settings.compile_timeout + settings.max_execution_time)
    assert longest <= spec["timeoutSeconds"] <= 600
    assert int(annotations["autoscaling.knative.dev/target"]) <= spec["containerConcurrency"]
    # Idle pools are shrunk by a running replica: before the last one goes away.
    retention = annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"]
    assert retention.endswith("m")
    shrunk_by = settings.kubernetes.pool_idle_seconds + settings.kubernetes.reap_interval
    assert shrunk_by < 60 + 60 * int(retention[:-1])
    (container,) = spec["containers"]
    assert len(container["ports"]) == 1 and container["ports"][0]["name"] in ("http1", "h2c")
    reserved = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
    assert not reserved & {e["name"] for e in container.get("env") or []}
    assert "securityContext" not in spec, "pod-level securityContext is behind a Knative flag"


def test_deployment_overlay_has_service_and_autoscaler(built: dict[str, list[Obj]]) -> None:
    for name in ("deployment", "dev"):
        objects = built[name]
        deployment = one(objects, "Deployment", "k8si-api")
        service = one(objects, "Service", "k8si-api")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches({"matchLabels": service["spec"]["selector"]}, labels)
        hpa = one(objects, "HorizontalPodAutoscaler", "k8si-api")
        assert "replicas" not in deployment["spec"], "the HPA owns replicas"
        assert hpa["spec"]["scaleTargetRef"]["name"] == "k8si-api"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_dev_overlay_is_self_contained_and_small(built: dict[str, list[Obj]]) -> None:
    objects = built["dev"]
    data = config_data(objects)
    assert data["VALKEY_URL"].startswith("valkey://k8si-valkey.")
    assert data["OBJECT_STORE_URL"] == "s3://k8si"
    assert data["S3_ENDPOINT"].startswith("http://k8si-garage.")
    one(objects, "StatefulSet", "k8si-valkey")
    one(objects, "StatefulSet", "k8si-garage")
    one(objects, "Job", "k8si-garage-init")
    assert sum(p["spec"]["replicas"] for p in pools(objects)) <= 2
    assert one(objects, "HorizontalPodAutoscaler", "k8si-api")["spec"]["minReplicas"] == 1
