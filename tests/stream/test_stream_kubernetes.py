"""``POST /exec/stream`` on the Kubernetes backend (the real control plane): the executor in a
pod streams over TCP; a client that leaves stops the program and the pod is deleted."""

from __future__ import annotations

import json
import time

import psutil

from app.cli_client import iter_sse
from tests.cluster import Namespace
from tests.k8s.conftest import AppFactory, ready_warm
from tests.stream.helpers import stream_exec


def _running(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_streaming_from_a_pod_and_leaving_it(kube: Namespace,
                                             k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    code = 'echo "$HOSTNAME"; for i in 1 2; do echo "tick $i"; sleep 0.5; done; echo done >&2'
    with app.client() as client:
        streamed = stream_exec(client, {"lang": "bash", "code": code})
    assert [e.name for e in streamed.events][-1] == "result"
    result = streamed.result
    assert result["status"] == "ok"
    hostname = result["stdout"].split()[0]
    assert hostname.startswith("k8si-pool-bash-")
    assert streamed.text("stdout") == result["stdout"] and streamed.text("stderr") == "done\n"
    first = next(e for e in streamed.events if e.name == "stdout")
    assert first.at < streamed.events[-1].at - 0.8, "output came while the pod ran"
    kube.wait_for(lambda: kube.get("pods", hostname) is None, message="pod deleted")

    # Now a client that goes away in the middle of a run.
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="pool refilled")
    marker = "3600.4242"  # sleep's argument: finds the program among the host's processes
    with app.client() as client, client.stream(
            "POST", "/exec/stream",
            json={"lang": "bash", "code": f'echo "$HOSTNAME"; echo ready; sleep {marker}'},
    ) as response:
        output = ""
        events = iter_sse(response.iter_lines())  # kept: closing it closes the connection
        for name, data in events:
            assert name == "stdout"
            output += json.loads(data)["text"]
            if "ready" in output:
                break
        pod = output.split()[0]
        kube.wait_for(lambda: _running(marker), message="the program runs")
    left = time.monotonic()
    kube.wait_for(lambda: not _running(marker), timeout=15, message="the program stopped")
    kube.wait_for(lambda: kube.get("pods", pod) is None, timeout=30,
                     message="the pod was deleted")
    assert time.monotonic() - left < 30
