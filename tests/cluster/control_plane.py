"""The real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built from the official Go modules by
``scripts/kube-control-plane``.

The apiserver serves TLS on a loopback port only, authenticates static tokens and
service-account tokens, authorizes with RBAC, runs the default admission plugins
(PodSecurity among them) with ``--allow-privileged=true`` so that PodSecurity itself
gives the refusal of a privileged pod, and writes an audit log of every request made
by a service account (the API replicas' identity in the tests). etcd keeps its data
under the control plane's directory without fsync: it is a test cluster.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import psutil

from tests.conftest import REPO, free_port

from .pki import Pki, write_pki

__all__ = ["CONTROLLERS", "ControlPlane", "ControlPlaneError", "build_binaries"]

#: The controllers the suite relies on (and what they need); the rest (volumes,
#: services, endpoints, certificates...) are left out: there is no network plumbing
#: or storage to manage. The node-lifecycle controller lifts the ``not-ready`` taint
#: that admission puts on a new Node once the node agent's Lease and Ready say so.
CONTROLLERS = ("serviceaccount-controller", "serviceaccount-token-controller",
               "node-lifecycle-controller",
               "namespace-controller", "garbage-collector-controller",
               "deployment-controller", "replicaset-controller", "job-controller",
               "ttl-after-finished-controller", "pod-garbage-collector-controller",
               "root-ca-certificate-publisher-controller", "resourcequota-controller")

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


class ControlPlaneError(Exception):
    """A control-plane process could not be built or did not come up."""


def build_binaries() -> Path:
    """Build (or find, when the cache is warm) the binaries; their directory."""
    script = REPO / "scripts" / "kube-control-plane"
    done = subprocess.run(["bash", str(script), "build"], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise ControlPlaneError(f"scripts/kube-control-plane build failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str, namespace: str,
                     user: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
  - name: k8si-test
    cluster:
      server: {server}
      certificate-authority: {ca_cert}
users:
  - name: {user}
    user:
      token: {token}
contexts:
  - name: {user}@k8si-test
    context: {{cluster: k8si-test, user: {user}, namespace: {namespace}}}
current-context: {user}@k8si-test
""")
    path.chmod(0o600)
    return path


@attrs.define
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class ControlPlane:
    """Start with ``start()``, stop with ``stop()``; ``admin_kubeconfig`` is system:masters."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.bin_dir = bin_dir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.pki: Pki = write_pki(directory / "pki")
        self.admin_kubeconfig = directory / "admin.kubeconfig"
        self.audit_log = directory / "audit.log"
        self.processes: list[_Process] = []
        self.start_seconds = 0.0

    # -- processes -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = self.directory / f"{name}.log"
        prefix: list[str] = []
        if setpriv := shutil.which("setpriv"):  # die with the test process
            prefix = [setpriv, "--pdeathsig", "KILL", "--"]
        with log.open("ab") as out:
            popen = subprocess.Popen([*prefix, str(self.bin_dir / name), *argv],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.directory)
        process = _Process(name, popen, log)
        self.processes.append(process)
        return process

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                tail = process.log.read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{process.name} exited with "
                                        f"{process.popen.returncode}:\n{tail}")

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        data = self.directory / "etcd"
        self._spawn("etcd", [
            "--name", "k8si-test", "--data-dir", str(data),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"k8si-test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        url = f"http://127.0.0.1:{client}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        self._wait("etcd", healthy)
        return url

    def _start_apiserver(self, etcd: str) -> None:
        policy = self.directory / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        pki = self.pki
        self._spawn("kube-apiserver", [
            "--etcd-servers", etcd,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port),
            "--tls-cert-file", str(pki.serving_cert),
            "--tls-private-key-file", str(pki.serving_key),
            "--client-ca-file", str(pki.ca_cert),
            "--token-auth-file", str(pki.token_file),
            "--service-account-key-file", str(pki.sa_public_key),
            "--service-account-signing-key-file", str(pki.sa_private_key),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--authorization-mode", "RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type", "none",
            "--audit-policy-file", str(policy),
            "--audit-log-path", str(self.audit_log),
            "--audit-log-format", "json", "--audit-log-mode", "blocking",
            "--profiling=false", "--v", "1"])
        context = ssl.create_default_context(cafile=str(pki.ca_cert))

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", verify=context, timeout=2, headers={
                    "Authorization": f"Bearer {pki.admin_token}"}).status_code == 200
            except httpx.HTTPError:
                return False
        self._wait("kube-apiserver /readyz", ready)

    def _start_controllers(self) -> None:
        common = ["--kubeconfig", str(self.admin_kubeconfig), "--leader-elect=false",
                  "--secure-port", "0", "--v", "1"]
        self._spawn("kube-controller-manager", [
            *common, "--controllers", ",".join(CONTROLLERS),
            "--service-account-private-key-file", str(self.pki.sa_private_key),
            "--root-ca-file", str(self.pki.ca_cert),
            "--use-service-account-credentials=false",
            "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
            "--concurrent-job-syncs", "10", "--concurrent-gc-syncs", "10"])
        self._spawn("kube-scheduler", common)

    def start(self) -> None:
        started = time.monotonic()
        try:
            etcd = self._start_etcd()
            self._start_apiserver(etcd)
            write_kubeconfig(self.admin_kubeconfig, self.url, self.pki.ca_cert,
                             self.pki.admin_token, "default", "k8si-harness-admin")
            self._start_controllers()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each process now."""
        sizes = {}
        for process in self.processes:
            try:
                sizes[process.name] = psutil.Process(process.popen.pid).memory_info().rss
            except psutil.Error:
                sizes[process.name] = 0
        return sizes

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in reversed(self.processes):
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)
        self.processes.clear()
