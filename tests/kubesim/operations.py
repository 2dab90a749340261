"""The apiserver's verbs on the store: create, get, list, replace, patch, delete.

The HTTP layer and the controllers both go through ``Cluster``. System metadata
(uid, creationTimestamp, generation, resourceVersion) is the server's: writes
cannot change it. Writes to a resource keep its ``status``; writes to ``/status``
change only the status. A write carrying a ``metadata.resourceVersion`` other than
the current one is a 409 Conflict. Deletion follows the registry and the garbage
collector: pods terminate gracefully (``deletionTimestamp``, then removal by the
kubelet) unless their grace period is 0 or they already finished; owners delete
their dependents in the background or orphan them (``propagationPolicy``).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    not_found,
    patch_rejected,
    status_body,
    success_status,
)
from .patch import PatchError, PatchSyntaxError, apply_json_patch, apply_merge_patch
from .resources import PODS, RESOURCES, ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Store
from .validation import apply_defaults, format_time, validate_object, validate_update

__all__ = ["Cluster", "DeleteOptions", "random_suffix"]

Obj = dict[str, Any]
DeleteOptions = dict[str, Any]
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds", "namespace", "name")
PATCH_TYPES = {"application/json-patch+json": "json",
               "application/merge-patch+json": "merge",
               "application/strategic-merge-patch+json": "merge"}


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


class Cluster:
    """The emulated apiserver's semantics over a ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads --------------------------------------------------------------------

    def _namespace_exists(self, namespace: str) -> None:
        if namespace not in self.store.namespaces:
            raise not_found("", "namespaces", namespace)

    def get(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.group, resource.plural, name)
        return copy.deepcopy(obj)

    def find(self, resource: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self.store.get(resource, namespace, name)
        return None if obj is None else copy.deepcopy(obj)

    def select(self, resource: ResourceType, namespace: str | None,
               labels: LabelSelector | None = None,
               fields: FieldSelector | None = None) -> list[Obj]:
        labels, fields = labels or LabelSelector(), fields or FieldSelector()
        return [copy.deepcopy(obj) for obj in self.store.objects(resource, namespace)
                if labels.matches(obj["metadata"].get("labels"))
                and fields.matches(resource, obj)]

    def list(self, resource: ResourceType, namespace: str | None, labels: LabelSelector,
             fields: FieldSelector, limit: int = 0, token: str | None = None) -> Obj:
        """A ``<Kind>List`` (items without kind/apiVersion, as the apiserver sends them)."""
        items = self.select(resource, namespace, labels, fields)
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token))["start"]
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
            items = [i for i in items if _key(i) > tuple(start)]
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": self.store.rv, "start": list(_key(items[-1]))}).encode()).decode()
            meta["remainingItemCount"] = remaining
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": resource.list_kind, "apiVersion": resource.api_version,
                "metadata": meta, "items": items}

    # -- create -------------------------------------------------------------------

    def create(self, resource: ResourceType, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        self._namespace_exists(namespace)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(_name_required(resource))
            meta["name"] = prefix + random_suffix()
            while self.store.get(resource, namespace, meta["name"]) is not None:
                meta["name"] = prefix + random_suffix()
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        obj.update(kind=resource.kind, apiVersion=resource.api_version)
        meta.update(namespace=namespace, uid=str(uuid.uuid4()),
                    creationTimestamp=format_time(), generation=1)
        apply_defaults(resource, obj)
        obj["status"] = {"phase": "Pending"} if resource is PODS else {}
        if resource is PODS:
            obj["status"]["qosClass"] = "Burstable"
        validate_object(resource, obj)
        if self.store.get(resource, namespace, meta["name"]) is not None:
            raise already_exists(resource.group, resource.plural, meta["name"])
        return self.store.create(resource, obj)

    # -- update -------------------------------------------------------------------

    def replace(self, resource: ResourceType, namespace: str, name: str, body: Any,
                subresource: str | None = None) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        body_name = (body.get("metadata") or {}).get("name")
        if body_name not in (None, name):
            raise bad_request(f"the name of the object ({body_name}) does not match the "
                              f"name on the URL ({name})")
        return self._write(resource, namespace, name, lambda _: copy.deepcopy(body),
                           subresource)

    def patch(self, resource: ResourceType, namespace: str, name: str, content_type: str,
              body: bytes, subresource: str | None = None) -> Obj:
        kind = PATCH_TYPES.get(content_type.split(";", maxsplit=1)[0].strip())
        if kind is None:
            raise ApiError(status_body(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                f"format - accepted media types include: {', '.join(PATCH_TYPES)}", {}))
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from exc

        def patched(current: Obj) -> Obj:
            try:
                if kind == "json":
                    return apply_json_patch(current, document)
                return apply_merge_patch(current, document)
            except PatchSyntaxError as exc:
                raise bad_request(str(exc)) from exc
            except PatchError as exc:
                raise patch_rejected() from exc

        return self._write(resource, namespace, name, patched, subresource)

    def _write(self, resource: ResourceType, namespace: str, name: str,
               change: Callable[[Obj], Obj], subresource: str | None) -> Obj:
        current = self.store.get(resource, namespace, name)
        if current is None:
            raise not_found(resource.group, resource.plural, name)
        new = change(copy.deepcopy(current))
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv not in (None, "") and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(resource.group, resource.plural, name)
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match "
                              f"the name on the URL ({name})")
        if subresource == "status":
            result = copy.deepcopy(current)
            result["status"] = new.get("status") or {}
        else:
            result = new
            result["status"] = copy.deepcopy(current.get("status") or {})
            for field in _SYSTEM_META:
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
                else:
                    meta.pop(field, None)
            result.update(kind=resource.kind, apiVersion=resource.api_version)
            validate_update(resource, current, result)
            if result.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if result == current:
            return copy.deepcopy(current)  # a no-op write does not bump the version
        return self.store.update(resource, result)

    def mutate(self, resource: ResourceType, namespace: str, name: str,
               change: Callable[[Obj], None]) -> Obj | None:
        """Internal write (controllers, kubelet): no validation, status included."""
        current = self.store.get(resource, namespace, name)
        if current is None:
            return None
        new = copy.deepcopy(current)
        change(new)
        if new == current:
            return copy.deepcopy(current)
        return self.store.update(resource, new)

    def create_internal(self, resource: ResourceType, obj: Obj) -> Obj:
        """A controller's create: through defaulting and validation like any client."""
        return self.create(resource, obj["metadata"]["namespace"], obj)

    # -- delete -------------------------------------------------------------------

    def delete(self, resource: ResourceType, namespace: str, name: str,
               options: DeleteOptions | None = None) -> Obj:
        options = options or {}
        current = self.store.get(resource, namespace, name)
        if current is None:
            raise not_found(resource.group, resource.plural, name)
        meta = current["metadata"]
        preconditions = options.get("preconditions") or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = preconditions.get(field)
            if wanted is not None and wanted != meta.get(field):
                raise conflict(resource.group, resource.plural, name,
                               f"Precondition failed: {label} in precondition: {wanted}, "
                               f"{label} in object meta: {meta.get(field)}")
        if resource is PODS:
            return self._delete_pod(current, options)
        policy = _propagation(resource, options)
        self.store.delete(resource, namespace, name)
        self._collect_dependents(meta["uid"], policy)
        return success_status(name, resource.group, resource.plural, meta["uid"])

    def _delete_pod(self, pod: Obj, options: DeleteOptions) -> Obj:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        grace = int(grace)
        if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in (
                "Succeeded", "Failed"):
            grace = 0
        if grace <= 0:
            return self.store.delete(PODS, meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", 0) <= grace:
            return copy.deepcopy(pod)

        def terminate(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = format_time()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        updated = self.mutate(PODS, meta["namespace"], meta["name"], terminate)
        assert updated is not None
        return updated

    def finalize_pod(self, namespace: str, name: str) -> None:
        """The kubelet is done with a terminating pod: remove the object."""
        if self.store.get(PODS, namespace, name) is not None:
            self.store.delete(PODS, namespace, name)

    def _collect_dependents(self, owner_uid: str, policy: str) -> None:
        """The garbage collector's part of a delete: orphan or delete the dependents."""
        for resource in RESOURCES:
            for obj in self.store.objects(resource):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                meta = obj["metadata"]
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                alive = [ref for ref in remaining if self.store.by_uid(ref.get("uid", ""))]
                if policy == "Orphan" or alive:
                    def release(o: Obj, keep: list[Obj] = remaining) -> None:
                        if keep:
                            o["metadata"]["ownerReferences"] = keep
                        else:
                            o["metadata"].pop("ownerReferences", None)
                    self.mutate(resource, meta["namespace"], meta["name"], release)
                else:
                    self.delete(resource, meta["namespace"], meta["name"],
                                {"propagationPolicy": "Background"})


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _propagation(resource: ResourceType, options: DeleteOptions) -> str:
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy is None:
        return resource.default_propagation
    if policy not in ("Orphan", "Background", "Foreground"):
        raise bad_request(f"DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: "
                          f"Unsupported value: \"{policy}\": supported values: "
                          "\"Foreground\", \"Background\", \"Orphan\"")
    return str(policy)


def _name_required(resource: ResourceType) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"{resource.kind} \"\" is invalid: metadata.name: Required value: "
                       "name or generateName is required", "reason": "Invalid",
            "details": {"kind": resource.kind, "causes": [
                {"reason": "FieldValueRequired", "message": "Required value: name or "
                 "generateName is required", "field": "metadata.name"}]}, "code": 422}
