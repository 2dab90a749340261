"""``python -m tests.kubesim --port P --kubeconfig FILE``: the emulator, standalone.

It writes the kubeconfig (pointing at ``http://127.0.0.1:P``, context namespace
``--namespace``) and serves until interrupted; then the real service can run
against it: ``EXECUTION_BACKEND=kubernetes KUBECONFIG=FILE k8si serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from pathlib import Path

from .server import KubeSim, default_runtime_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kubesim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="k8si")
    parser.add_argument("--runtime-dir", type=Path, default=default_runtime_dir(),
                        help="the sandbox Python runtime (created if missing)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where sandboxes live (default: a temporary directory)")
    parser.add_argument("--fake-executors", action="store_true",
                        help="run pods without processes (no nsjail needed)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the kubelet's health probes
    sim = KubeSim(namespace=args.namespace, port=args.port,
                  kubeconfig_path=args.kubeconfig.absolute(), runtime_dir=args.runtime_dir,
                  work_dir=args.work_dir, run_executors=not args.fake_executors)

    async def run() -> None:
        serving = asyncio.create_task(sim.serve())
        while not sim.ready.is_set() and not serving.done():
            await asyncio.sleep(0.01)
        print(f"kubesim: serving {sim.url}, kubeconfig {sim.kubeconfig_path}, "
              f"namespace {sim.namespace}", file=sys.stderr, flush=True)
        await serving

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        if args.work_dir is None:
            shutil.rmtree(sim.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
