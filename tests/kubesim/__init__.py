"""A Kubernetes API emulator for the Kubernetes backend's tests (no cluster needed).

``KubeSim`` serves a real HTTP apiserver on 127.0.0.1 that kr8s (or httpx) talks to
through a generated kubeconfig: pods, ``apps/v1`` deployments and replicasets,
``batch/v1`` jobs; label and field selectors; JSON Patch (a failed ``test`` is the
apiserver's 422 Status), merge patch (a stale ``metadata.resourceVersion`` is a 409
Conflict); one global resourceVersion; NDJSON watches with bookmarks and 410 Gone;
a ReplicaSet controller that releases pods whose labels stop matching and refills;
a Job controller with ``ttlSecondsAfterFinished``; and a kubelet that starts each
pod's executor as a real local sandbox on the pod's own loopback IP
(``127.A.B.C:8080``), where user code sees ``HOSTNAME`` = the pod's name.

In tests (a fresh emulator per test, in a background thread)::

    from tests.kubesim.fixtures import kubesim   # in a conftest.py: registers the fixture

    def test_something(kubesim: KubeSim) -> None:
        settings = ...(kubeconfig=str(kubesim.kubeconfig_path), namespace=kubesim.namespace)
        ...
        kubesim.objects("pods", label_selector="k8si.io/state=warm")   # stored objects
        kubesim.count_requests(verb="patch", resource="pods")          # the request log
        kubesim.requests                 # [RequestRecord(method, path, query, params, verb,
                                         #   resource, name, status, started, duration)]
        kubesim.clear_requests()

or directly: ``with KubeSim(namespace="k8si", runtime_dir=...) as sim: ...``.
``fake_kubesim`` runs pods without processes (they still get an IP and go Ready).
Test hooks: ``compact()`` (the next resume from an older version is a 410),
``close_watches()``, ``bookmark()``, ``exit_pod(name, code)``, and the pod
annotations ``kubesim.k8si.io/ready: "false"``, ``kubesim.k8si.io/fail-start:
"true"``, ``kubesim.k8si.io/executor: "fake"``.

Standalone, to run the real service against it by hand::

    python -m tests.kubesim --port 6443 --kubeconfig /tmp/kubesim.kubeconfig
    EXECUTION_BACKEND=kubernetes KUBECONFIG=/tmp/kubesim.kubeconfig k8si serve

Module map: ``store`` (objects, resourceVersion, history), ``selectors``,
``patch``, ``validation``, ``operations`` (the verbs, deletion and garbage
collection), ``watch``, ``api`` (ASGI routes, request log), ``controllers``
(Deployment, ReplicaSet, controller manager), ``jobs``, ``kubelet`` /
``kubelet_runtime`` / ``podspec`` (pods as sandboxes), ``server`` (``KubeSim``),
``fixtures`` (pytest).
"""

from .api import RequestRecord
from .kubelet import ANNOTATION_EXECUTOR, ANNOTATION_FAIL_START, ANNOTATION_READY
from .server import KubeSim, default_runtime_dir

__all__ = ["ANNOTATION_EXECUTOR", "ANNOTATION_FAIL_START", "ANNOTATION_READY", "KubeSim",
           "RequestRecord", "default_runtime_dir"]
