"""The ``k8si`` command: ``serve`` runs the API, ``setup`` prepares the local runtime,
``reap`` deletes expired Kubernetes sandboxes once (for a CronJob)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from typing import Any

import attrs

from .cli_client import add_client_commands
from .settings import Settings, SettingsError
from .tenants.cli import add_key_commands, run_key_command

__all__ = ["main"]


def _api_keys(settings: Settings) -> tuple[tuple[str, ...], str]:
    """Keys from ``API_KEYS``, else the one kept in the data dir (made on first start)."""
    if settings.api_keys:
        return settings.api_keys, "API_KEYS"
    key_file = settings.data_dir / "api-key"
    if key_file.exists():
        return (key_file.read_text().strip(),), str(key_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return (key,), f"{key_file} (generated)"


def _banner(settings: Settings, key: str, source: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return (
        f"\nK8sInterpreter is starting on {base}\n"
        f"  API key (from {source}): {key}\n"
        f"  Try it:\n"
        f"    curl -s {base}/exec -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\\n"
        f"         -d '{{\"lang\": \"py\", \"code\": \"print(1)\"}}'\n"
        f"  Health: {base}/health   Languages: {base}/health/ready (with the key)\n"
    )


def serve(settings: Settings) -> None:
    import atexit
    import gc
    import time

    import uvicorn

    from .backends.local.runtime import ensure_runtime
    from .log import configure_logging
    from .main import create_app

    configure_logging(settings.log_level)
    keys, source = _api_keys(settings)
    settings = attrs.evolve(settings, api_keys=keys)
    if settings.execution_backend == "local":
        ensure_runtime(settings.runtime_dir)
    print(_banner(settings, keys[0], source), file=sys.stderr, flush=True)
    # obstore's async runtime can abort the interpreter at exit (a shutdown race);
    # a short pause at exit avoids it (see shared/spec/libraries.md).
    atexit.register(time.sleep, 0.1)
    app = create_app(settings)
    # What the imports and the app made lives as long as the process: out of the
    # collector's reach, a full collection during a request walks only what requests
    # made (~25 ms of pause otherwise, a P99 of its own).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port,
                timeout_keep_alive=120, log_config=None, access_log=False,
                **proxy_options(settings))


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy options: the peer address is the client's, unless the peer is one
    of ``FORWARDED_ALLOW_IPS``; then the right-most ``X-Forwarded-For`` entry that is not
    one of them is (what a trusted proxy appended, never what a client wrote)."""
    if not settings.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True,
            "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="k8si", description="K8sInterpreter")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the API (embedded defaults)")
    serve_cmd.add_argument("--host", help="bind address (default HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default PORT or 8000)")
    commands.add_parser("setup", help="create the local sandbox Python runtime")
    add_key_commands(commands)
    commands.add_parser("reap", help="one Kubernetes maintenance pass: reap expired leases, "
                                     "shrink idle pools (for a CronJob)")
    add_client_commands(commands)  # exec, status: clients of a running server
    args = parser.parse_args(argv)
    if hasattr(args, "client_command"):
        sys.exit(args.client_command(args))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"k8si: configuration error: {exc}\n")
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        serve(attrs.evolve(settings, **overrides))
    elif args.command == "setup":
        from .backends.local.runtime import ensure_runtime

        runtime = ensure_runtime(settings.runtime_dir)
        print(f"k8si: sandbox Python runtime ready in {runtime.venv}")
    elif args.command == "keys":
        sys.exit(run_key_command(args, settings))
    elif args.command == "reap":
        print(f"k8si: reaped {asyncio.run(_reap_once(settings))} expired sandboxes")


async def _reap_once(settings: Settings) -> int:
    from .backends.kubernetes.client import KubeClient
    from .backends.kubernetes.pools import PoolScaler
    from .backends.kubernetes.reaper import maintain
    from .backends.kubernetes.templates import PodTemplates

    config = settings.kubernetes
    client = await KubeClient.connect(config.kubeconfig, config.namespace,
                                      config.request_timeout)
    return await maintain(client, PoolScaler(client, PodTemplates(config), settings))


if __name__ == "__main__":
    main()
