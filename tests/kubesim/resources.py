"""The resource types the emulator serves, and its discovery documents.

Each ``ResourceType`` knows its group/version/plural/kind, the fields its field
selectors accept (the apiserver answers 400 for any other), the default
propagation policy of a DELETE (``batch/v1`` Jobs orphan their pods unless told
otherwise; ``apps/v1`` objects delete theirs in the background), and whether a
DELETE answers the object (pods) or a ``Status`` (the others).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["DEPLOYMENTS", "JOBS", "PODS", "REPLICASETS", "RESOURCES", "ResourceType",
           "api_group", "api_group_list", "api_resource_list", "api_versions", "by_kind",
           "lookup", "version_info"]

FieldGetter = Callable[[Mapping[str, Any]], str]

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _path(*keys: str, default: str = "") -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                return default
            value = value[key]
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)
    return get


_META_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}


@attrs.frozen
class ResourceType:
    """One namespaced resource of the emulated API."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    short_names: tuple[str, ...]
    subresources: tuple[str, ...]
    fields: Mapping[str, FieldGetter]
    default_propagation: str = "Background"
    returns_deleted_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> str:
        """``pods``, ``deployments.apps``: how the store files this resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = ResourceType(
    group="", version="v1", plural="pods", kind="Pod", singular="pod", short_names=("po",),
    subresources=("status",), returns_deleted_object=True,
    fields={**_META_FIELDS,
            "spec.nodeName": _path("spec", "nodeName"),
            "spec.restartPolicy": _path("spec", "restartPolicy"),
            "spec.schedulerName": _path("spec", "schedulerName"),
            "spec.serviceAccountName": _path("spec", "serviceAccountName"),
            "spec.hostNetwork": _path("spec", "hostNetwork", default="false"),
            "status.phase": _path("status", "phase"),
            "status.podIP": _path("status", "podIP"),
            "status.nominatedNodeName": _path("status", "nominatedNodeName")})
DEPLOYMENTS = ResourceType(
    group="apps", version="v1", plural="deployments", kind="Deployment",
    singular="deployment", short_names=("deploy",), subresources=("status", "scale"),
    fields=_META_FIELDS)
REPLICASETS = ResourceType(
    group="apps", version="v1", plural="replicasets", kind="ReplicaSet",
    singular="replicaset", short_names=("rs",), subresources=("status", "scale"),
    fields={**_META_FIELDS, "status.replicas": _path("status", "replicas", default="0")})
JOBS = ResourceType(
    group="batch", version="v1", plural="jobs", kind="Job", singular="job", short_names=(),
    subresources=("status",), default_propagation="Orphan",
    fields={**_META_FIELDS, "status.successful": _path("status", "succeeded", default="0")})

RESOURCES: tuple[ResourceType, ...] = (PODS, DEPLOYMENTS, REPLICASETS, JOBS)


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    for resource in RESOURCES:
        if (resource.api_version, resource.kind) == (api_version, kind):
            return resource
    return None


# -- discovery ----------------------------------------------------------------------

def version_info() -> dict[str, Any]:
    """``GET /version``: a version kr8s 0.20 supports (1.28 to 1.35)."""
    return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _groups() -> list[str]:
    return sorted({r.group for r in RESOURCES if r.group})


def api_group(group: str) -> dict[str, Any] | None:
    if group not in _groups():
        return None
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [version],
            "preferredVersion": version}


def api_group_list() -> dict[str, Any]:
    groups = [api_group(group) for group in _groups()]
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")}
                       for g in groups if g is not None]}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    members = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
    if not members:
        return None
    listed: list[dict[str, Any]] = []
    for resource in members:
        entry: dict[str, Any] = {"name": resource.plural, "singularName": resource.singular,
                                 "namespaced": True, "kind": resource.kind, "verbs": _VERBS}
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        entry["categories"] = ["all"]
        listed.append(entry)
        for sub in resource.subresources:
            kind = "Scale" if sub == "scale" else resource.kind
            sub_entry: dict[str, Any] = {"name": f"{resource.plural}/{sub}", "singularName": "",
                                         "namespaced": True, "kind": kind,
                                         "verbs": ["get", "patch", "update"]}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1")
            listed.append(sub_entry)
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": listed}
