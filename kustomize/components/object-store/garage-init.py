"""Prepare a single-node Garage for the API, through Garage's admin API (v1).

1. wait until the admin API answers (``GET /v1/status``);
2. if the layout has no role yet, give this node one and apply the layout;
3. import the API's key pair (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) if
   Garage does not know it;
4. create the bucket named in ``OBJECT_STORE_URL`` (``s3://<bucket>``) if missing;
5. allow the key to read and write it.

Every step looks first, so running it again changes nothing. Standard library only
(it runs in a stock ``python:3.11-slim`` image). Environment: ``GARAGE_ADMIN_URL``,
``GARAGE_ADMIN_TOKEN``, ``OBJECT_STORE_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``GARAGE_CAPACITY`` (bytes, default 10 GB),
``GARAGE_WAIT_SECONDS`` (default 300).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class AdminError(Exception):
    """The admin API answered an HTTP error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Admin:
    """A tiny client of Garage's admin API v1 (bearer-token auth, JSON bodies)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - an http(s) URL from configuration
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AdminError(exc.code, exc.read().decode(errors="replace")) from exc
        return json.loads(raw) if raw.strip() else None


def wait_for_status(admin: Admin, deadline: float) -> dict[str, Any]:
    while True:
        try:
            status: dict[str, Any] = admin.call("GET", "/v1/status")
            return status
        except (OSError, AdminError) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"garage-init: waiting for the admin API ({exc})", flush=True)
            time.sleep(3)


def bucket_name(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"OBJECT_STORE_URL must be s3://<bucket>, got {url!r}")
    return parsed.netloc


def ensure_layout(admin: Admin, status: dict[str, Any], capacity: int) -> None:
    layout = status.get("layout") or {}
    if layout.get("roles"):
        print("garage-init: layout already assigned", flush=True)
        return
    node = status["node"]
    admin.call("POST", "/v1/layout",
               [{"id": node, "zone": "dc1", "capacity": capacity, "tags": ["k8si"]}])
    admin.call("POST", "/v1/layout/apply", {"version": int(layout.get("version", 0)) + 1})
    print(f"garage-init: layout assigned to node {node[:16]}", flush=True)


def ensure_key(admin: Admin, key_id: str, secret: str) -> None:
    try:
        admin.call("GET", "/v1/key?" + urllib.parse.urlencode({"id": key_id}))
        print(f"garage-init: key {key_id} present", flush=True)
    except AdminError as exc:
        if exc.status >= 500:
            raise
        admin.call("POST", "/v1/key/import",
                   {"name": "k8si-api", "accessKeyId": key_id, "secretAccessKey": secret})
        print(f"garage-init: key {key_id} imported", flush=True)


def ensure_bucket(admin: Admin, name: str, key_id: str) -> None:
    try:
        bucket = admin.call("GET", "/v1/bucket?" + urllib.parse.urlencode({"globalAlias": name}))
        print(f"garage-init: bucket {name} present", flush=True)
    except AdminError as exc:
        if exc.status >= 500:
            raise
        bucket = admin.call("POST", "/v1/bucket", {"globalAlias": name})
        print(f"garage-init: bucket {name} created", flush=True)
    admin.call("POST", "/v1/bucket/allow", {
        "bucketId": bucket["id"], "accessKeyId": key_id,
        "permissions": {"read": True, "write": True, "owner": False}})
    print(f"garage-init: key {key_id} may read and write {name}", flush=True)


def main(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    admin = Admin(env["GARAGE_ADMIN_URL"], env["GARAGE_ADMIN_TOKEN"])
    deadline = time.monotonic() + float(env.get("GARAGE_WAIT_SECONDS", "300"))
    status = wait_for_status(admin, deadline)
    ensure_layout(admin, status, int(env.get("GARAGE_CAPACITY", "10000000000")))
    ensure_key(admin, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    ensure_bucket(admin, bucket_name(env["OBJECT_STORE_URL"]), env["AWS_ACCESS_KEY_ID"])
    print("garage-init: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
