"""Faults survived: Valkey restarted, the object store down, the apiserver failing for a
while, the API process killed mid-execution. Each answers clearly and recovers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from moto.server import ThreadedMotoServer

from app.valkey import server_binary
from tests.cluster import Namespace
from tests.cluster.faults import FaultProxy
from tests.conftest import API_KEY, free_port, make_settings, start_app, stop_app
from tests.k8s.conftest import AppFactory, k8s_app_factory, ready_warm


class Valkey:
    """A valkey-server that can be stopped and started again on the same port and data."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"valkey://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def restartable_valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path / "valkey")
    server.directory.mkdir()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def test_valkey_restart_under_load(tmp_path: Path, runtime_dir: Path,
                                   restartable_valkey: Valkey) -> None:
    settings = make_settings(tmp_path / "data", runtime_dir, restartable_valkey.url,
                             pool_sizes={}, pool_warmup_on_startup=False)
    app, server, thread = start_app(settings)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with app.client() as client:
            while not stop.is_set():
                statuses.append(client.post("/exec", json={"lang": "bash",
                                                           "code": "echo x"}).status_code)

    try:
        with app.client() as client:
            first = client.post("/exec", json={"lang": "bash",
                                               "code": "echo kept > /mnt/data/k.txt"}).json()
            session = first["session_id"]
            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(0.5)
            restartable_valkey.stop()
            down = client.post("/exec", json={"lang": "bash", "code": "true"})
            assert down.status_code == 503
            assert down.json()["error"] == "service_unavailable"
            assert int(down.headers["Retry-After"]) > 0
            assert client.get("/health").status_code == 200, "liveness needs no dependency"
            assert client.get("/health/ready").status_code in (503, 401)
            time.sleep(0.5)
            restartable_valkey.start()
            deadline = time.monotonic() + 30
            while client.post("/exec", json={"lang": "bash", "code": "true"}).status_code != 200:
                assert time.monotonic() < deadline, "no recovery after Valkey came back"
                time.sleep(0.2)
            stop.set()
            worker.join(timeout=60)
            again = client.post("/exec", json={"lang": "bash", "session_id": session,
                                               "code": "cat /mnt/data/k.txt"}).json()
            assert again["session_id"] == session and again["stdout"] == "kept\n"
    finally:
        stop.set()
        stop_app(server, thread)
    assert set(statuses) <= {200, 503}, "only clear answers while Valkey was away"
    assert 200 in statuses


def test_object_store_unavailable(tmp_path: Path, runtime_dir: Path, valkey_url: str) -> None:
    import boto3

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="t", aws_secret_access_key="t").create_bucket(Bucket="faults")
    settings = make_settings(
        tmp_path / "data", runtime_dir, valkey_url, pool_sizes={}, pool_warmup_on_startup=False,
        object_store_url="s3://faults", object_store_options={
            "endpoint": endpoint, "region": "us-east-1", "access_key_id": "t",
            "secret_access_key": "t", "allow_http": "true"})
    app, server, thread = start_app(settings)
    try:
        with app.client() as client:
            ok = client.post("/upload", files={"file": ("a.txt", b"before", "text/plain")})
            session = ok.json()["session_id"]
            moto.stop()
            failed = client.post("/upload", files={"file": ("b.txt", b"during", "text/plain")},
                                 data={"session_id": session})
            assert failed.status_code == 503
            assert failed.json()["error"] == "storage_unavailable"
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            names = [f["name"] for f in client.get(
                f"/files/{session}", params={"detail": "normalized"}).json()]
            assert names == ["a.txt"], "nothing half-written is visible"
    finally:
        stop_app(server, thread)
        moto.stop()


def test_apiserver_errors_are_retried_then_clear(kube: Namespace, tmp_path: Path,
                                                 k8s_app_factory: AppFactory) -> None:
    """The real apiserver behind a fault proxy: a 429 storm is retried with jitter, a
    5xx outage is a clear 503, and service comes back when the apiserver does."""
    proxy = FaultProxy(kube.cluster.url, kube.cluster.control_plane.pki.ca_cert).start()
    try:
        config = proxy.kubeconfig(tmp_path / "proxy.kubeconfig", kube.cluster.api_token,
                                  kube.namespace)
        app = k8s_app_factory({"bash": 1}, kubeconfig=config)
        kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
        with app.client() as client:
            proxy.fail(429, 2)  # a short storm: retried with jitter
            assert client.post("/exec", json={"lang": "bash", "code": "echo ok"}).json()[
                "stdout"] == "ok\n"
            assert proxy.injected == 2
            proxy.fail(500, 1000)  # a long outage: a clear 503
            down = client.post("/exec", json={"lang": "bash", "code": "echo ok"})
            assert down.status_code == 503 and down.json()["error"] == "service_unavailable"
            proxy.fail(500, 0)
            kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
            assert client.post("/exec", json={"lang": "bash", "code": "echo back"}).json()[
                "stdout"] == "back\n"
    finally:
        proxy.stop()


def test_a_stalled_apiserver_is_a_clear_answer_not_a_hang(kube: Namespace, tmp_path: Path,
                                                          k8s_app_factory: AppFactory) -> None:
    """Requests that stall past the client's timeout are retried and end in an answer."""
    proxy = FaultProxy(kube.cluster.url, kube.cluster.control_plane.pki.ca_cert).start()
    try:
        config = proxy.kubeconfig(tmp_path / "proxy.kubeconfig", kube.cluster.api_token,
                                  kube.namespace)
        app = k8s_app_factory({"bash": 1}, kubeconfig=config, request_timeout=1,
                              reap_interval=3600)
        kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
        with app.client() as client:
            proxy.stall(3, 2)  # past the request timeout: abandoned, retried, answered
            assert client.post("/exec", json={"lang": "bash", "code": "echo slow"}).json()[
                "stdout"] == "slow\n"
            assert proxy.stalled == 2
    finally:
        proxy.stop()


def test_api_killed_mid_execution_leaves_no_sandbox(tmp_path: Path, runtime_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VALKEY_URL",)}
    env.update(DATA_DIR=str(tmp_path / "data"), RUNTIME_DIR=str(runtime_dir),
               API_KEYS=API_KEY, POD_POOL_PY="1")
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    uids: list[int] = []

    def long_run() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it: the point
            httpx.post(f"{base}/exec", headers={"X-API-Key": API_KEY}, timeout=60,
                       json={"lang": "bash", "code": "sleep 30"})

    runner = threading.Thread(target=long_run)
    runner.start()
    time.sleep(2)
    children = psutil.Process(server.pid).children(recursive=True)
    uids = sorted({p.uids().real for p in children if p.uids().real >= 1_000_000})
    assert uids, "sandboxes were running"
    server.send_signal(signal.SIGKILL)
    runner.join(timeout=60)
    deadline = time.monotonic() + 20
    while True:
        left = [p for p in psutil.process_iter(["uids", "name", "cmdline", "status"])
                if p.info["status"] != psutil.STATUS_ZOMBIE  # dead, awaiting init's reaping
                and ((p.info["uids"] and p.info["uids"].real in uids)
                     or (p.info["name"] == "nsjail"
                         and str(tmp_path) in " ".join(p.info["cmdline"] or [])))]
        if not left:
            break
        assert time.monotonic() < deadline, f"leaked: {left}"
        time.sleep(0.2)
    valkeys = [p for p in psutil.process_iter(["name", "cmdline"])
               if "valkey-server" in (p.info["name"] or "")
               and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    deadline = time.monotonic() + 20
    while valkeys and time.monotonic() < deadline:
        valkeys = [p for p in valkeys if p.is_running() and p.status() != "zombie"]
        time.sleep(0.2)
    assert not valkeys, "the embedded Valkey dies with the API too"

__all__ = ["k8s_app_factory"]  # a fixture used above
