"""Start the test cluster by hand: ``python -m tests.cluster [--dir DIR]``.

Prints the admin kubeconfig and a namespace whose kubeconfig is the API's
ServiceAccount, then runs until interrupted, e.g. for::

    EXECUTION_BACKEND=kubernetes KUBECONFIG=<printed> k8si serve
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from tests.conftest import REPO

from .harness import KubeCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="work directory")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="k8si-cluster-"))
    runtime = REPO / ".k8si-test" / "runtime"
    with KubeCluster(directory, runtime.absolute()) as cluster:
        namespace = cluster.namespace(directory / "api")
        rss = {name: f"{size / 2**20:.0f} MB"
               for name, size in cluster.control_plane.rss_bytes().items()}
        print(f"control plane up in {cluster.control_plane.start_seconds:.1f} s; RSS {rss}")
        print(f"admin kubeconfig: {cluster.control_plane.admin_kubeconfig}")
        print(f"API kubeconfig:   {namespace.kubeconfig_path} "
              f"(namespace {namespace.namespace}, the project's Role)", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()


if __name__ == "__main__":
    main()
