"""Sandbox pod templates, from ``manifests/sandbox-pod.yaml`` (the one source).

The pool Deployment of a language and the Job of a cold execution are both built
from that pod template here: language, image, resources, labels and the executor's
arguments are filled in; nothing else about the pod is decided in code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from ...settings import KubernetesSettings

__all__ = [
    "ANNOTATION_MANAGED",
    "ANNOTATION_TEMPLATE",
    "IMAGE_GROUPS",
    "LABEL_COMPONENT",
    "LABEL_LANGUAGE",
    "LABEL_POOL",
    "LABEL_STATE",
    "MANAGED_BY_API",
    "TEMPLATE_PATH",
    "PodTemplates",
    "template_hash",
]

TEMPLATE_PATH = Path(__file__).resolve().parents[3] / "manifests" / "sandbox-pod.yaml"

LABEL_COMPONENT = "k8si.io/component"
LABEL_LANGUAGE = "k8si.io/language"
LABEL_POOL = "k8si.io/pool"
LABEL_STATE = "k8si.io/state"
ANNOTATION_TARGET = "k8si.io/target-size"
ANNOTATION_LAST_CLAIM = "k8si.io/last-claim"
#: On a pool Deployment the API created (``MANAGED_BY_API``): the API keeps its pod
#: template as its settings say (``k8si.io/template-hash`` tells when they changed). A
#: Deployment applied by kustomize has neither: its template is kustomize's to change.
ANNOTATION_MANAGED = "k8si.io/managed-by"
ANNOTATION_TEMPLATE = "k8si.io/template-hash"
MANAGED_BY_API = "k8si-api"

#: Runtime image group per language: one image serves several languages.
IMAGE_GROUPS = {"py": "python", "bash": "python", "js": "node", "ts": "node", "c": "native",
                "cpp": "native", "f90": "native", "d": "native", "java": "java", "php": "php",
                "rs": "rust", "go": "go", "r": "r"}


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    if document.get("kind") != "Pod":
        raise ValueError(f"{path} must hold a Pod template")
    return document


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6,
          "G": 10**9, "T": 10**12}


def memory_mb(quantity: str) -> int:
    """A Kubernetes memory quantity (``1Gi``, ``512Mi``, ``1e9``) in MiB."""
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor) // 2**20
    return int(float(quantity)) // 2**20


def template_hash(template: dict[str, Any]) -> str:
    """A short digest of a pod template as the API renders it."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


class PodTemplates:
    """Builds pool Deployments and Jobs for each language from the pod template."""

    def __init__(self, config: KubernetesSettings, path: Path = TEMPLATE_PATH) -> None:
        self.config = config
        self.template = _load(path)

    def image(self, lang: str) -> str:
        return self.config.images.get(lang) or self.config.image_template.format(
            group=IMAGE_GROUPS[lang], lang=lang)

    def pod(self, lang: str, labels: dict[str, str]) -> dict[str, Any]:
        """The pod (metadata + spec) for ``lang``, with ``labels`` added."""
        pod = copy.deepcopy(self.template)
        metadata = pod.setdefault("metadata", {})
        metadata["labels"] = {**metadata.get("labels", {}), LABEL_LANGUAGE: lang, **labels}
        spec = pod["spec"]
        if self.config.runtime_class:
            spec["runtimeClassName"] = self.config.runtime_class
        container = spec["containers"][0]
        container["image"] = self.image(lang)
        args = list(container.get("args", []))
        args[args.index("--lang") + 1] = lang
        port = str(self.config.executor_port)
        args[args.index("--tcp") + 1] = f":{port}"  # every address, IPv4 and IPv6
        if "--memory-mb" in args:  # the executor's view of the container's memory limit
            args[args.index("--memory-mb") + 1] = str(memory_mb(self.config.memory_limit))
        container["args"] = args
        container["ports"][0]["containerPort"] = self.config.executor_port
        container["resources"]["requests"].update(cpu=self.config.cpu_request,
                                                  memory=self.config.memory_request)
        container["resources"]["limits"].update(cpu=self.config.cpu_limit,
                                                memory=self.config.memory_limit)
        return pod

    def pool_deployment(self, lang: str, replicas: int, target: int) -> dict[str, Any]:
        selector = {LABEL_POOL: lang, LABEL_STATE: "warm"}
        pod = self.pod(lang, selector)
        pod["spec"]["restartPolicy"] = "Always"  # the only policy a Deployment accepts
        template = {"metadata": pod["metadata"], "spec": pod["spec"]}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"k8si-pool-{lang}",
                         "labels": {LABEL_COMPONENT: "pool", LABEL_POOL: lang},
                         "annotations": {ANNOTATION_TARGET: str(target),
                                         ANNOTATION_LAST_CLAIM: f"{time.time():.3f}",
                                         ANNOTATION_MANAGED: MANAGED_BY_API,
                                         ANNOTATION_TEMPLATE: template_hash(template)}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                     "template": template},
        }

    def job(self, name: str, lang: str, labels: dict[str, str],
            annotations: dict[str, str], deadline: int | None = None) -> dict[str, Any]:
        """``deadline``: the Job's hard deadline in seconds (else ``SANDBOX_LEASE_SECONDS``)."""
        deadline = deadline or self.config.lease_seconds
        pod = self.pod(lang, labels)
        pod["metadata"].setdefault("annotations", {}).update(annotations)
        pod["spec"]["restartPolicy"] = "Never"
        pod["spec"]["activeDeadlineSeconds"] = deadline
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            # The language on the Job too: a runtime session that keeps it reads it back.
            "metadata": {"name": name, "labels": {LABEL_COMPONENT: "job",
                                                  LABEL_LANGUAGE: lang, **labels},
                         "annotations": annotations},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": self.config.job_ttl_seconds,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {
                        "containerName": "executor", "operator": "NotIn", "values": [0]}},
                    {"action": "Ignore", "onPodConditions": [
                        {"type": "DisruptionTarget", "status": "True"}]},
                ]},
                "template": {"metadata": pod["metadata"], "spec": pod["spec"]},
            },
        }
