"""A thin layer over kr8s's HTTP session: the few apiserver calls the backend makes.

Each call is one request (no discovery round trips), answers parsed JSON, and
raises ``KubeError`` with the status code and reason of the apiserver's Status
body. 429, 5xx, transport failures and timeouts (``request_timeout`` per request:
kr8s sets none) are retried with jittered backoff (tenacity);
409 and 422 never are: for a claim they mean "another replica won".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import httpx
import kr8s.asyncio
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

__all__ = ["DEPLOYMENTS", "JOBS", "PODS", "KubeClient", "KubeError", "Resource"]


@attrs.frozen
class Resource:
    """Where a namespaced resource lives in the API."""

    version: str
    plural: str


PODS = Resource("v1", "pods")
DEPLOYMENTS = Resource("apps/v1", "deployments")
JOBS = Resource("batch/v1", "jobs")


class KubeError(Exception):
    """The apiserver answered an error (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        #: How many times the request was sent (retried after 5xx, 429 or no answer).
        self.attempts = 1


#: The field manager the apiserver records for the API's writes (``managedFields``).
FIELD_MANAGER = "k8si-api"
_AS_API = {"fieldManager": FIELD_MANAGER}


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, KubeError) and (exc.status in (0, 429) or exc.status >= 500)


def _event(line: str) -> dict[str, Any]:
    """One watch event; a line that is not one (a proxy's page) is a ``KubeError``."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        raise KubeError(502, "NotJSON", f"a watch line that is not an event: {line[:200]!r}")
    return event


class KubeClient:
    """Namespaced calls through one kr8s API object."""

    def __init__(self, api: Any, namespace: str, attempts: int = 5,
                 request_timeout: float = 10.0) -> None:
        self.api = api
        self.namespace = namespace
        self._attempts = attempts
        #: kr8s sets no timeout: a stalled apiserver would hold a request forever.
        self._timeout = httpx.Timeout(request_timeout)
        #: How many times the credentials were renewed (``_renew_credentials``), one at a time.
        self._credentials = 0
        self._renewing = asyncio.Lock()

    @classmethod
    async def connect(cls, kubeconfig: str | None, namespace: str | None,
                      request_timeout: float = 10.0) -> KubeClient:
        api = await kr8s.asyncio.api(kubeconfig=kubeconfig, namespace=namespace)
        return cls(api, namespace or api.namespace, request_timeout=request_timeout)

    async def _call(self, method: str, resource: Resource, path: str = "", *,
                    params: Mapping[str, str] | None = None, body: Any = None,
                    content_type: str = "application/json") -> dict[str, Any]:
        async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable), reraise=True,
                stop=stop_after_attempt(self._attempts),
                wait=wait_random_exponential(multiplier=0.05, max=2)):
            with attempt:
                try:
                    return await self._once(method, resource, path, params=params, body=body,
                                            content_type=content_type)
                except KubeError as exc:
                    exc.attempts = attempt.retry_state.attempt_number
                    raise
        raise AssertionError("unreachable: tenacity re-raises")

    async def _once(self, method: str, resource: Resource, path: str, *,
                    params: Mapping[str, str] | None, body: Any,
                    content_type: str) -> dict[str, Any]:
        url = resource.plural + (f"/{path}" if path else "")
        kwargs: dict[str, Any] = {"params": dict(params or {}), "timeout": self._timeout}
        if body is not None:
            kwargs["content"] = orjson.dumps(body)
            kwargs["headers"] = {"Content-Type": content_type}
        for attempt in range(2):
            credentials = self._credentials
            try:
                async with self.api.call_api(method, version=resource.version,
                                             namespace=self.namespace, url=url,
                                             raise_for_status=False, **kwargs) as response:
                    status, content = response.status_code, response.content
            except (httpx.TransportError, kr8s.APITimeoutError, RuntimeError) as exc:
                # kr8s turns httpx's timeouts into its own APITimeoutError; a RuntimeError
                # is a client closed by a renewal meanwhile: sent again (retried)
                raise KubeError(0, "Unreachable", repr(exc)) from exc
            if status == 401 and attempt == 0:
                await self._renew_credentials(credentials)
                continue
            break
        try:
            data: dict[str, Any] = orjson.loads(content) if content else {}
        except orjson.JSONDecodeError:
            # Not the apiserver's JSON: a proxy's or load balancer's page.
            raise KubeError(status if status >= 400 else 502, "NotJSON",
                            content[:200].decode("utf-8", "replace")) from None
        if not isinstance(data, dict):
            raise KubeError(502, "NotJSON", "the answer is not a JSON object")
        if status >= 400:
            raise KubeError(status, str(data.get("reason", "")),
                            str(data.get("message", content[:200].decode("utf-8", "replace"))))
        return data

    async def _renew_credentials(self, seen: int) -> None:
        """Expired credentials (an exec plugin's token): kr8s renews them only for requests
        that raise on errors, which ours do not. Renewed once for all the requests that
        were refused with the same ones (``seen``: the credentials they were sent with)."""
        async with self._renewing:
            if self._credentials != seen:
                return  # renewed meanwhile by another request
            try:
                await self.api.reauthenticate()
                await self.api._create_session()  # the new token in the client's headers
            except Exception as exc:  # an exec plugin, a kubeconfig: typed here
                raise KubeError(401, "Unauthorized",
                                f"the credentials could not be renewed: {exc!r}") from exc
            self._credentials += 1

    async def list_objects(self, resource: Resource, **params: str) -> dict[str, Any]:
        return await self._call("GET", resource, params=params)

    async def get(self, resource: Resource, name: str) -> dict[str, Any]:
        return await self._call("GET", resource, name)

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", resource, body=body, params=_AS_API)

    async def json_patch(self, resource: Resource, name: str,
                         ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call("PATCH", resource, name, body=ops, params=_AS_API,
                                content_type="application/json-patch+json")

    async def merge_patch(self, resource: Resource, name: str,
                          patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", resource, name, body=patch, params=_AS_API,
                                content_type="application/merge-patch+json")

    async def delete(self, resource: Resource, name: str, propagation: str = "Background",
                     resource_version: str | None = None) -> bool:
        """Delete it (gone already: fine). ``resource_version``: only as it was then; False
        when it changed meanwhile (409: left as it is)."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1",
                                   "propagationPolicy": propagation, "gracePeriodSeconds": 0}
        if resource_version is not None:
            options["preconditions"] = {"resourceVersion": resource_version}
        try:
            await self._call("DELETE", resource, name, body=options)
        except KubeError as exc:
            if exc.status == 409 and resource_version is not None:
                return False
            if exc.status != 404:  # already gone: deleting is idempotent
                raise
        return True

    async def watch(self, resource: Resource, resource_version: str, timeout: int,
                    **params: str) -> AsyncIterator[dict[str, Any]]:
        """Events of a watch from ``resource_version``; an ERROR event is yielded as is."""
        query = {**params, "watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout)}
        try:
            async with self.api.call_api("GET", version=resource.version,
                                         namespace=self.namespace, url=resource.plural,
                                         raise_for_status=False, stream=True,
                                         params=query, timeout=httpx.Timeout(
                                             self._timeout.connect, read=timeout + 30)
                                         ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise KubeError(response.status_code, "WatchFailed", response.text[:200])
                async for line in response.aiter_lines():
                    if line.strip():
                        yield _event(line)
        except (httpx.TransportError, kr8s.APITimeoutError) as exc:
            raise KubeError(0, "Unreachable", repr(exc)) from exc
