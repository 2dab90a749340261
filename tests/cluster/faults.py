"""A fault-injecting proxy in front of the real apiserver: what a healthy apiserver never
does on demand (429 storms, 5xx outages, stalled answers), for the fault tests.

``FaultProxy`` listens on plain HTTP on a loopback port, forwards every request to
the apiserver over TLS (the caller's bearer token passes through unchanged, so RBAC
still applies), and streams answers back (watches work through it). Faults apply to
the next N requests: ``fail(status, n)`` answers a Kubernetes ``Status`` body with
that code (and ``Retry-After: 1`` for 429), ``garble(n)`` answers 200 with an HTML
page (a misconfigured proxy or load balancer in front of the apiserver),
``stall(seconds, n)`` holds each request that long before forwarding it, and
``expire_watches(n, as_status=...)`` ends the next ``n`` watches as the apiserver does
when their resourceVersion is too old: an ERROR event with a 410 Status (or, with
``as_status``, a 410 answer).
``kubeconfig(path, token, namespace)`` writes a kubeconfig that points at the proxy.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

from tests.conftest import free_port

from .control_plane import write_kubeconfig

__all__ = ["FaultProxy"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "host", "content-length"}
_REASONS = {401: "Unauthorized", 429: "TooManyRequests", 500: "InternalError", 502: "BadGateway",
            503: "ServiceUnavailable", 504: "Timeout"}


class FaultProxy:
    """Start with ``start()`` (a background thread), stop with ``stop()``."""

    def __init__(self, upstream: str, ca_file: Path) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ca_file = ca_file
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._lock = threading.Lock()
        self._fail_status, self._fail_left = 0, 0
        self._stall_seconds, self._stall_left = 0.0, 0
        self._garble_left = 0
        self._expire_left, self._expire_as_status = 0, False
        self.forwarded = 0
        self.injected = 0
        self.stalled = 0
        self._client: httpx.AsyncClient | None = None
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name="fault-proxy")

    # -- control (from the test thread) ------------------------------------------------

    def fail(self, status: int, count: int) -> None:
        """The next ``count`` requests answer ``status`` (0 clears)."""
        with self._lock:
            self._fail_status, self._fail_left = status, count

    def garble(self, count: int) -> None:
        """The next ``count`` requests answer 200 with a page that is not JSON."""
        with self._lock:
            self._garble_left = count

    def expire_watches(self, count: int, *, as_status: bool = False) -> None:
        """The next ``count`` watch requests end at once: "too old" (410)."""
        with self._lock:
            self._expire_left, self._expire_as_status = count, as_status

    def _take_expiry(self, scope: Scope) -> str | None:
        """``"event"`` or ``"status"`` when this request is a watch to expire."""
        if b"watch=true" not in scope.get("query_string", b""):
            return None
        with self._lock:
            if self._expire_left <= 0:
                return None
            self._expire_left -= 1
            return "status" if self._expire_as_status else "event"

    def stall(self, seconds: float, count: int) -> None:
        """The next ``count`` requests wait ``seconds`` before they are forwarded."""
        with self._lock:
            self._stall_seconds, self._stall_left = seconds, count

    def kubeconfig(self, path: Path, token: str, namespace: str) -> Path:
        """A kubeconfig for the API's ServiceAccount that points at the proxy."""
        return write_kubeconfig(path, self.url, self._ca_file, token, namespace, "k8si-api")

    def start(self) -> FaultProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fault proxy did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    # -- the ASGI side -----------------------------------------------------------------

    def _take_fault(self) -> tuple[int, float]:
        with self._lock:
            status = stall = 0.0
            if self._fail_left > 0:
                self._fail_left -= 1
                status = self._fail_status
            elif self._garble_left > 0:
                self._garble_left -= 1
                status = 200
            if self._stall_left > 0:
                self._stall_left -= 1
                stall = self._stall_seconds
            return int(status), stall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        expiry = self._take_expiry(scope)
        if expiry is not None:
            self.injected += 1
            await self._expired(send, expiry)
            return
        status, stall = self._take_fault()
        if stall:
            self.stalled += 1
            await asyncio.sleep(stall)
        if status:
            self.injected += 1
            await self._status(send, status)
            return
        if self._client is None:
            self._client = httpx.AsyncClient(verify=self._context,
                                             timeout=httpx.Timeout(30, read=None))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]
                   if k.decode().lower() not in _HOP]
        query = scope.get("query_string", b"").decode()
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        request = self._client.build_request(scope["method"], url, headers=headers,
                                             content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError:
            await self._status(send, 502)
            return
        self.forwarded += 1
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k.encode(), v.encode())
                                    for k, v in response.headers.items()
                                    if k.lower() not in _HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _expired(self, send: Send, form: str) -> None:
        gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "Expired", "code": 410,
                "message": "too old resource version (injected by the fault proxy)"}
        if form == "status":
            await send({"type": "http.response.start", "status": 410,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": orjson.dumps(gone)})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body",
                    "body": orjson.dumps({"type": "ERROR", "object": gone}) + b"\n"})

    async def _status(self, send: Send, status: int) -> None:
        if status == 200:  # garbled: a page, not the apiserver's JSON
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body",
                        "body": b"<html><body>502 Bad Gateway (injected)</body></html>"})
            return
        reason = _REASONS.get(status, "InternalError")
        body = orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Failure", "reason": reason, "code": status,
                             "message": f"injected by the fault proxy ({status})"})
        headers = [(b"content-type", b"application/json")]
        if status == 429:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
