"""The HTTP face of the emulator: a small ASGI app served by uvicorn.

Routes: discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}``,
``/apis/{g}/{v}``), namespaces (get/list), and for each resource
``/api/v1/namespaces/{ns}/pods[/{name}[/status]]`` and
``/apis/{g}/{v}/namespaces/{ns}/{plural}[/{name}[/status|/scale]]`` with
get, list, watch, create, update (PUT), patch, delete and deletecollection; plus
the all-namespaces ``/api/v1/pods`` style for list and watch. Every request is
recorded in ``requests`` (a ``RequestRecord`` each) so tests can count what a
critical path costs in apiserver round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson

from . import resources
from .errors import ApiError, bad_request, method_not_allowed, not_found, status_body
from .operations import Cluster
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .watch import WatchOptions, open_watch, stream_events

__all__ = ["KubeApi", "RequestRecord"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Obj = dict[str, Any]


@attrs.define
class RequestRecord:
    """One request the emulated apiserver answered."""

    method: str
    path: str
    query: str
    params: dict[str, str]
    #: get, list, watch, create, update, patch, delete, deletecollection, discovery
    verb: str
    #: The plural (``pods``, ``deployments``...) or None for discovery.
    resource: str | None
    name: str | None
    subresource: str | None
    content_type: str | None
    started: float
    status: int = 0
    duration: float | None = None


@attrs.frozen
class _Target:
    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _scale(obj: Obj) -> Obj:
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}}


class KubeApi:
    """The ASGI application."""

    def __init__(self, cluster: Cluster, watch_options: WatchOptions) -> None:
        self.cluster = cluster
        self.watch_options = watch_options
        self.requests: list[RequestRecord] = []
        self.server_address = "127.0.0.1:0"
        #: Fault injection: the next ``failures_left`` API requests answer ``failure_status``.
        self.failures_left = 0
        self.failure_status = 500

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        params = dict(parse_qsl(query, keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        record = RequestRecord(method=scope["method"], path=path, query=query, params=params,
                               verb="discovery", resource=None, name=None, subresource=None,
                               content_type=headers.get("content-type"), started=time.time())
        started = time.monotonic()
        if self.failures_left > 0 and path.startswith(("/api/", "/apis/")):
            self.failures_left -= 1
            reason = "TooManyRequests" if self.failure_status == 429 else "InternalError"
            await self._respond(record, send, self.failure_status, status_body(
                self.failure_status, reason, f"injected failure ({self.failure_status})"))
            return
        try:
            await self._handle(record, receive, send)
        finally:
            record.duration = time.monotonic() - started

    async def _respond(self, record: RequestRecord, send: Send, status: int, body: Any) -> None:
        record.status = status
        self.requests.append(record)
        payload = body.encode() if isinstance(body, str) else orjson.dumps(body)
        content_type = b"text/plain" if isinstance(body, str) else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"cache-control", b"no-cache, private"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, record: RequestRecord, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(receive)
            result = self._discovery(record.path)
            if result is not None:
                if record.method != "GET":
                    raise method_not_allowed()
                await self._respond(record, send, 200, result)
                return
            target = self._route(record.path)
            record.resource, record.name = target.resource.plural, target.name
            record.subresource = target.subresource
            if record.method == "GET" and target.name is None and \
                    record.params.get("watch") in ("true", "1"):
                record.verb = "watch"
                await self._watch(record, target, receive, send)
                return
            status, answer = self._dispatch(record, target, body)
            await self._respond(record, send, status, answer)
        except ApiError as error:
            await self._respond(record, send, error.code, error.body)
        except Exception as exc:
            logger.exception("kubesim: request failed")
            await self._respond(record, send, 500, status_body(
                500, "InternalError", f"Internal error occurred: {exc!r}", {}))

    def _discovery(self, path: str) -> Obj | str | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return resources.version_info()
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return "ok"
        if parts == ["api"]:
            return resources.api_versions(self.server_address)
        if parts == ["apis"]:
            return resources.api_group_list()
        if len(parts) == 2 and parts[0] == "api":
            found = resources.api_resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            found = resources.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            found = resources.api_resource_list(parts[1], parts[2])
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            return self._namespaces(parts[3] if len(parts) == 4 else None)
        else:
            return None
        if found is None:
            raise ApiError(status_body(404, "NotFound", "the server could not find the "
                                       "requested resource", {}))
        return found

    def _namespaces(self, name: str | None) -> Obj:
        def namespace(ns: str) -> Obj:
            return {"kind": "Namespace", "apiVersion": "v1",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        known = sorted(self.cluster.store.namespaces)
        if name is None:
            return {"kind": "NamespaceList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.cluster.store.rv)},
                    "items": [namespace(ns) for ns in known]}
        if name not in known:
            raise not_found("", "namespaces", name)
        return namespace(name)

    def _route(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            rest, group, version = [], "", ""
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        resource = resources.lookup(group, version, rest[0]) if rest else None
        if resource is None or len(rest) > 3 or (namespace is None and len(rest) > 1):
            raise ApiError(status_body(404, "NotFound", "the server could not find the "
                                       "requested resource", {}))
        subresource = rest[2] if len(rest) == 3 else None
        if subresource is not None and subresource not in resource.subresources:
            raise ApiError(status_body(404, "NotFound", "the server could not find the "
                                       "requested resource", {}))
        return _Target(resource, namespace, rest[1] if len(rest) >= 2 else None, subresource)

    def _dispatch(self, record: RequestRecord, target: _Target, body: bytes) -> tuple[int, Any]:
        cluster, method, params = self.cluster, record.method, record.params
        resource, namespace, name = target.resource, target.namespace, target.name
        sub = target.subresource
        if name is None:
            labels = parse_label_selector(params.get("labelSelector"))
            fields = parse_field_selector(params.get("fieldSelector"), resource)
            if method == "GET":
                record.verb = "list"
                limit = params.get("limit") or "0"
                if not limit.isdigit():
                    raise bad_request(f"limit: Invalid value: {limit!r}")
                return 200, cluster.list(resource, namespace, labels, fields, int(limit),
                                         params.get("continue"))
            if namespace is None:
                raise method_not_allowed()
            if method == "POST":
                record.verb = "create"
                return 201, cluster.create(resource, namespace, _json(body))
            if method == "DELETE":
                record.verb = "deletecollection"
                options = _delete_options(body, params)
                items = [cluster.delete(resource, namespace, o["metadata"]["name"], options)
                         for o in cluster.select(resource, namespace, labels, fields)]
                return 200, {"kind": resource.list_kind, "apiVersion": resource.api_version,
                             "metadata": {"resourceVersion": str(cluster.store.rv)},
                             "items": [i for i in items if i.get("kind") != "Status"]}
            raise method_not_allowed()
        assert namespace is not None
        scale = sub == "scale"
        status_sub = "status" if sub == "status" else None
        if method == "GET":
            record.verb = "get"
            obj = cluster.get(resource, namespace, name)
            return 200, _scale(obj) if scale else obj
        if method == "PUT":
            record.verb = "update"
            document = _json(body)
            if scale:
                replicas = (document.get("spec") or {}).get("replicas", 0)
                rv = (document.get("metadata") or {}).get("resourceVersion")
                patch = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}}
                obj = cluster.patch(resource, namespace, name, "application/merge-patch+json",
                                    orjson.dumps(patch))
                return 200, _scale(obj)
            return 200, cluster.replace(resource, namespace, name, document, status_sub)
        if method == "PATCH":
            record.verb = "patch"
            obj = cluster.patch(resource, namespace, name, record.content_type or "", body,
                                status_sub)
            return 200, _scale(obj) if scale else obj
        if method == "DELETE" and sub is None:
            record.verb = "delete"
            return 200, cluster.delete(resource, namespace, name,
                                       _delete_options(body, params))
        raise method_not_allowed()

    async def _watch(self, record: RequestRecord, target: _Target, receive: Receive,
                     send: Send) -> None:
        params = record.params
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), target.resource)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        watcher = open_watch(self.cluster.store, target.resource, target.namespace, labels,
                             fields, params, self.watch_options)
        record.status = 200
        self.requests.append(record)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"cache-control", b"no-cache, private")]})

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            watcher.close()

        listener = asyncio.create_task(disconnect())
        try:
            await stream_events(self.cluster.store, watcher, write, self.watch_options,
                                timeout)
        except Exception:  # the client went away mid-write: nothing left to answer
            logger.debug("kubesim: watch stream ended", exc_info=True)
        finally:
            listener.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from exc


def _delete_options(body: bytes, params: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if body.strip():
        decoded = _json(body)
        if not isinstance(decoded, dict):
            raise bad_request("DeleteOptions must be an object")
        options.update(decoded)
    if "propagationPolicy" in params:
        options["propagationPolicy"] = params["propagationPolicy"]
    if params.get("gracePeriodSeconds"):
        try:
            options["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
        except ValueError as exc:
            raise bad_request("gracePeriodSeconds must be an integer") from exc
    if "orphanDependents" in params:
        options["orphanDependents"] = params["orphanDependents"] == "true"
    return options
