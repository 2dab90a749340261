"""The real Kubernetes control plane for the tests, and our node agent in the kubelet's place.

``scripts/kube-control-plane`` builds kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl (``k8s.io/kubernetes``) and etcd (``go.etcd.io/etcd``) from
the official Go modules into a cache outside the repository; ``KubeCluster`` runs
them on loopback with TLS, RBAC, the default admission plugins (PodSecurity among
them) and an audit log; ``NodeAgent`` plays the kubelet (pods run as local
sandboxes on their own loopback IPs); ``FaultProxy`` sits in front of the apiserver
to inject what a healthy apiserver never does on demand (429, 5xx, stalls).

Module map: ``control_plane`` (processes, flags), ``pki`` (keys, tokens),
``node_agent`` / ``node`` / ``podspec`` / ``sandboxes`` (the node), ``harness`` (cluster,
per-test namespaces, audit log), ``faults`` (the proxy), ``fixtures`` (pytest).
By hand: ``python -m tests.cluster`` starts one and prints a kubeconfig.
"""

from .harness import API_USER, AuditRecord, KubeCluster, Namespace

__all__ = ["API_USER", "AuditRecord", "KubeCluster", "Namespace"]
