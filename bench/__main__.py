"""``python -m bench``: run the benchmark, print the table, write ``BENCHMARKS.md``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .runner import Options, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--no-kubernetes", action="store_true",
                        help="skip the Kubernetes path (a real control plane, tests/cluster)")
    parser.add_argument("--kubernetes-only", action="store_true",
                        help="only the Kubernetes path; prints the rows, writes no report")
    parser.add_argument("--profile", action="store_true",
                        help="an extra concurrency-8 run: py-spy the API process, "
                             "perf the sandboxes (bench/kernel.py)")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="where to write the report ('-' for nowhere)")
    parser.add_argument("--pool-size", type=int, default=8, help="POD_POOL_PY of the service")
    parser.add_argument("--command", default="nox -s bench", help="the command named in the report")
    args = parser.parse_args()
    run(Options(quick=args.quick, kubernetes=not args.no_kubernetes,
                kubernetes_only=args.kubernetes_only, profile=args.profile,
                output=None if str(args.output) == "-" else args.output,
                pool_size=args.pool_size, command=args.command))


main()
