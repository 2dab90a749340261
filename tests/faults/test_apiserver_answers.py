"""Answers a healthy apiserver does not give, through the fault proxy in front of the
real one: a 401 (credentials expired: renewed once, the request sent again), a page
that is not JSON (a proxy in between: retried, then a clear 503), and an apiserver
down while the API is asked whether it is ready (an answer, never a hang). Plus two
replicas starting at once on an empty namespace: both serve, one pool."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Namespace
from tests.cluster.faults import FaultProxy
from tests.conftest import RunningApp
from tests.k8s.conftest import AppFactory, k8s_app_factory, ready_warm

__all__ = ["k8s_app_factory"]  # a fixture used below


@pytest.fixture
def proxy(kube: Namespace) -> Iterator[FaultProxy]:
    started = FaultProxy(kube.cluster.url, kube.cluster.control_plane.pki.ca_cert).start()
    yield started
    started.stop()


@pytest.fixture
def proxied(kube: Namespace, proxy: FaultProxy, tmp_path: Path,
            k8s_app_factory: AppFactory) -> RunningApp:
    """An API replica whose apiserver is behind the proxy, with one warm bash pod."""
    config = proxy.kubeconfig(tmp_path / "proxy.kubeconfig", kube.cluster.api_token,
                              kube.namespace)
    app = k8s_app_factory({"bash": 1}, kubeconfig=config, reap_interval=3600)
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    return app


def _echo(app: RunningApp, text: str) -> tuple[int, dict[str, object]]:
    with app.client() as client:
        answer = client.post("/exec", json={"lang": "bash", "code": f"echo {text}"})
    return answer.status_code, answer.json()


def test_a_401_renews_the_credentials_once_and_sends_again(
        kube: Namespace, proxied: RunningApp, proxy: FaultProxy) -> None:
    proxy.fail(401, 1)
    status, body = _echo(proxied, "renewed")
    assert (status, body["stdout"]) == (200, "renewed\n")
    assert proxy.injected == 1
    proxy.fail(401, 1000)  # credentials that renewing does not fix: a clear answer
    status, body = _echo(proxied, "refused")
    assert status == 503 and body["error"] == "service_unavailable", body
    # Each refused call was sent twice: once, and once more with renewed credentials.
    kube.wait_for(lambda: proxy.injected >= 3 and proxy.injected % 2 == 1, timeout=10,
                  message="every call refused twice, never retried in a loop")
    proxy.fail(401, 0)


def test_an_answer_that_is_not_json_is_retried_then_a_clear_503(proxied: RunningApp,
                                                                proxy: FaultProxy) -> None:
    proxy.garble(1)
    status, body = _echo(proxied, "through")
    assert (status, body["stdout"]) == (200, "through\n")
    assert proxy.injected == 1
    proxy.garble(1000)
    status, body = _echo(proxied, "garbled")
    assert status == 503 and body["error"] == "service_unavailable", body
    proxy.garble(0)
    status, body = _echo(proxied, "back")
    assert (status, body["stdout"]) == (200, "back\n")


def test_readiness_answers_while_the_apiserver_is_down(proxied: RunningApp,
                                                       proxy: FaultProxy) -> None:
    proxy.fail(500, 100_000)
    with proxied.client() as client:
        ready = client.get("/health/ready")
    proxy.fail(500, 0)
    body = ready.json()
    assert ready.status_code == 503, body
    assert body["services"]["backend"]["status"] != "healthy", body


@pytest.mark.parametrize("as_status", [False, True])
def test_a_cold_start_whose_watch_expires_relists_and_serves(
        kube: Namespace, proxy: FaultProxy, tmp_path: Path, k8s_app_factory: AppFactory,
        as_status: bool) -> None:
    """No pool: a Job, whose pod the API watches until it is ready. Watches that end
    "too old" (an ERROR event, or a 410 answer) are followed by a fresh list and watch."""
    config = proxy.kubeconfig(tmp_path / "proxy.kubeconfig", kube.cluster.api_token,
                              kube.namespace)
    app = k8s_app_factory({}, kubeconfig=config, reap_interval=3600)
    proxy.expire_watches(2, as_status=as_status)
    status, body = _echo(app, "cold")
    assert (status, body["stdout"]) == (200, "cold\n"), body
    assert proxy.injected == 2, "both watches expired, and the pod was still found"


def test_two_replicas_starting_at_once_make_one_pool(kube: Namespace,
                                                    k8s_app_factory: AppFactory) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        apps = list(pool.map(lambda _: k8s_app_factory({"bash": 1}), range(2)))
    assert [d["metadata"]["name"] for d in kube.objects("deployments")] == ["k8si-pool-bash"]
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    for number, app in enumerate(apps):
        status, body = _echo(app, f"replica{number}")
        assert (status, body["stdout"]) == (200, f"replica{number}\n")
