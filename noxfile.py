"""Developer sessions: ``nox -s serve``, ``tests``, ``lint``, ``bench``.

Each session installs the project into its own virtual environment (``soak`` runs a
steady load for ten minutes and is not part of CI). The README's
commands (``python3 scripts/dev.py serve|test``) do the same without needing nox.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def serve(session: nox.Session) -> None:
    """Run the service with the embedded defaults (``k8si serve``)."""
    session.install("-e", ".")
    session.run("k8si", "serve", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: real sandboxes, real Valkey, all thirteen languages."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy and the import contracts (``[tool.importlinter]``), all must be clean."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("mypy")
    session.run("lint-imports")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark of performance.md: prints the table and writes BENCHMARKS.md.

    ``nox -s bench -- --quick`` for a short smoke run, ``-- --no-kubernetes`` to skip
    the Kubernetes rows (the real control plane of ``tests/cluster``), ``-- --kubernetes-only``
    for just those, ``-- --profile`` to add a py-spy profile of the API process.
    """
    session.install("-e", ".[test]", "prometheus_client", "py-spy")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Steady mixed load (default ten minutes; not in CI): errors, latency, memory, leaks.

    ``nox -s soak -- --duration 600 --rate 2`` (see scripts/soak.py).
    """
    session.install("-e", ".[test]")
    session.run("python", "scripts/soak.py", *session.posargs)
