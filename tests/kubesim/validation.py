"""Defaulting and validation, for the fields the backend's objects exercise.

What a cluster would reject, the emulator rejects with the same status: label keys
and values (``a:b`` is not a label value), non-string labels and annotations (a
400, like the apiserver's decoder), a Deployment whose selector does not match its
template or whose pods would not ``restartPolicy: Always``, a Job whose pods would
(``Never``/``OnFailure`` only), and pod updates outside the mutable fields
(``activeDeadlineSeconds`` may only be set or lowered, ``image`` may change).
"""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, bad_request, invalid
from .resources import DEPLOYMENTS, JOBS, PODS, ResourceType
from .selectors import label_selector_from_struct, validate_label_key, validate_label_value

__all__ = ["apply_defaults", "format_time", "parse_time", "validate_object",
           "validate_update"]

Obj = dict[str, Any]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_ANNOTATIONS = 256 * 1024


def format_time(when: float | None = None) -> str:
    """RFC 3339 with second precision, as ``metav1.Time`` serialises."""
    stamp = datetime.fromtimestamp(time.time() if when is None else when, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _decode_error(field: str, value: Any) -> ApiError:
    kind = {bool: "bool", int: "number", float: "number", list: "array",
            dict: "object"}.get(type(value), "value")
    return bad_request(f"json: cannot unmarshal {kind} into Go struct field "
                       f"ObjectMeta.{field} of type string")


def _string_map(meta: Obj, field: str) -> dict[str, str]:
    value = meta.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error(f"metadata.{field}", value)
    for item in value.values():
        if not isinstance(item, str):
            raise _decode_error(f"metadata.{field}", item)
    return value


def _meta_causes(meta: Obj, prefix: str = "metadata") -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    for key, value in _string_map(meta, "labels").items():
        if (why := validate_label_key(key)) is not None:
            causes.append((f"{prefix}.labels", f'Invalid value: "{key}": {why}'))
        if (why := validate_label_value(value)) is not None:
            causes.append((f"{prefix}.labels", f'Invalid value: "{value}": {why}'))
    annotations = _string_map(meta, "annotations")
    for key in annotations:
        if (why := validate_label_key(key)) is not None:
            causes.append((f"{prefix}.annotations", f'Invalid value: "{key}": {why}'))
    if sum(len(k) + len(v) for k, v in annotations.items()) > _MAX_ANNOTATIONS:
        causes.append((f"{prefix}.annotations", "Too long: must have at most 262144 bytes"))
    return causes


def apply_defaults(resource: ResourceType, obj: Obj) -> None:
    """The defaults the apiserver fills in on create (the ones that matter here)."""
    spec = obj.setdefault("spec", {})
    if resource is PODS:
        _default_pod_spec(spec)
    elif resource is DEPLOYMENTS:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": "25%", "maxSurge": "25%"}})
        _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif resource is JOBS:
        _default_job_selector(obj)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        template_spec = spec.setdefault("template", {}).setdefault("spec", {})
        restart = template_spec.get("restartPolicy")
        _default_pod_spec(template_spec)
        if restart is None:  # a Job's pods have no default: validation rejects it
            template_spec.pop("restartPolicy")


def _default_job_selector(job: Obj) -> None:
    """The generated selector and pod labels of a Job (unless ``manualSelector``)."""
    spec = job["spec"]
    if spec.get("manualSelector"):
        return
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = template_meta.get("labels")
    labels = dict(labels) if isinstance(labels, dict) else {}
    labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name":
                   name, "controller-uid": uid, "job-name": name})
    template_meta["labels"] = labels


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("imagePullPolicy", "IfNotPresent")


def _pod_spec_causes(spec: Any, prefix: str) -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [(prefix, "Required value")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{prefix}.containers", "Required value")]
    causes = []
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not container.get("name"):
            causes.append((f"{prefix}.containers[{i}].name", "Required value"))
        elif not container.get("image"):
            causes.append((f"{prefix}.containers[{i}].image", "Required value"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        causes.append((f"{prefix}.activeDeadlineSeconds",
                       f"Invalid value: {deadline}: must be between 1 and 2147483647"))
    return causes


def validate_object(resource: ResourceType, obj: Obj) -> None:
    """Raise the apiserver's 400/422 for an object about to be stored."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    causes: list[tuple[str, str]] = []
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                       "subdomain must consist of lower case alphanumeric characters, '-' "
                       "or '.', and must start and end with an alphanumeric character"))
    causes += _meta_causes(meta)
    spec = obj.get("spec") or {}
    if resource is PODS:
        causes += _pod_spec_causes(spec, "spec")
    else:
        template = spec.get("template") or {}
        causes += _meta_causes(template.get("metadata") or {}, "spec.template.metadata")
        causes += _pod_spec_causes(template.get("spec"), "spec.template.spec")
        restart = (template.get("spec") or {}).get("restartPolicy")
        if resource is DEPLOYMENTS:
            causes += _deployment_causes(spec, template, restart)
        elif resource is JOBS:
            if restart not in ("Never", "OnFailure"):
                what = "Required value" if restart is None else \
                    f'Unsupported value: "{restart}"'
                causes.append(("spec.template.spec.restartPolicy",
                               f'{what}: supported values: "OnFailure", "Never"'))
            if resource is JOBS and len(name) > 63:
                causes.append(("metadata.name", "must be no more than 63 characters"))
            for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
                value = spec.get(field)
                if value is not None and (not isinstance(value, int) or value < 0):
                    causes.append((f"spec.{field}", f"Invalid value: {value}: must be "
                                   "greater than or equal to 0"))
    if causes:
        raise invalid(resource.group, resource.kind, name, causes)


def _deployment_causes(spec: Obj, template: Obj, restart: Any) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    selector = spec.get("selector")
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (selector.get("matchLabels")
                                              or selector.get("matchExpressions")):
        causes.append(("spec.selector", "Required value"))
    else:
        try:
            matches = label_selector_from_struct(selector).matches(labels)
        except ValueError as exc:
            causes.append(("spec.selector", f"Invalid value: {exc}"))
        else:
            if not matches:
                causes.append(("spec.template.metadata.labels",
                               f"Invalid value: {labels}: `selector` does not match "
                               "template `labels`"))
    if restart != "Always":
        causes.append(("spec.template.spec.restartPolicy",
                       f'Unsupported value: "{restart}": supported values: "Always"'))
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than "
                       "or equal to 0"))
    return causes


def _mutable_pod_spec(spec: Obj) -> Obj:
    """The pod spec without the fields an update may change."""
    spec = copy.deepcopy(spec)
    for field in ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations",
                  "schedulingGates", "nodeName"):
        spec.pop(field, None)
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                container.pop("image", None)
    return spec


def validate_update(resource: ResourceType, old: Obj, new: Obj) -> None:
    """Raise the 422 a cluster answers for a forbidden change."""
    name = old["metadata"]["name"]
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    causes: list[tuple[str, str]] = []
    if resource is PODS:
        if _mutable_pod_spec(old_spec) != _mutable_pod_spec(new_spec):
            causes.append(("spec", "Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                           "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                           "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                           "(allow it to be set to 1 if it was previously negative)"))
        before, after = old_spec.get("activeDeadlineSeconds"), new_spec.get(
            "activeDeadlineSeconds")
        if before is not None and after is None:
            causes.append(("spec.activeDeadlineSeconds", "Invalid value: \"null\": must "
                           "not update from a positive integer to nil value"))
        elif before is not None and isinstance(after, int) and after > before:
            causes.append(("spec.activeDeadlineSeconds", f"Invalid value: {after}: must be "
                           "less than or equal to previous value"))
    elif resource is DEPLOYMENTS and old_spec.get("selector") != new_spec.get("selector"):
        causes.append(("spec.selector", f"Invalid value: {new_spec.get('selector')}: field "
                       "is immutable"))
    elif resource is JOBS:
        for field in ("template", "selector", "completions", "completionMode"):
            if old_spec.get(field) != new_spec.get(field):
                causes.append((f"spec.{field}", "Invalid value: field is immutable"))
    if causes:
        raise invalid(resource.group, resource.kind, name, causes)
    validate_object(resource, new)
