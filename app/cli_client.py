"""The client commands of ``k8si``: ``exec`` runs a file on a server, ``status`` reports on it,
``runtime-sessions list|end`` shows and ends runtime sessions (an admin key).

``k8si exec FILE [--lang L] [--session ID] [--file PATH ...] [--arg A ...] [--timeout S]
[--out DIR]`` uploads the ``--file`` inputs into the session (a new one unless
``--session`` is given), runs FILE through ``POST /exec/stream`` while printing its
stdout and stderr as they come, then saves the files the run produced into ``--out``
(default: the current directory). The language comes from ``--lang`` or FILE's
extension. The exit status is the program's own; 1 when it ended without one (a
timeout, a signal); 2 for an error of the client, the request or the connection;
130 after Ctrl-C, which also stops the program on the server.

``k8si status`` prints liveness, readiness (``/health/ready``: dependencies and
languages) and the warm pools (``/health/pool``); it exits 1 when not healthy.

The server and key come from ``--url``/``--api-key`` or ``K8SI_URL``/``K8SI_API_KEY``
(default URL ``http://127.0.0.1:8000``). Uses only the public API, like any client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import httpx

from sidecar.contract import LANGUAGES

__all__ = ["CliError", "add_client_commands", "guess_language", "iter_sse"]

DEFAULT_URL = "http://127.0.0.1:8000"
_EXTRA_EXTENSIONS = {".mjs": "js", ".cjs": "js", ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp",
                     ".f": "f90", ".f95": "f90", ".f03": "f90", ".r": "r", ".bash": "bash"}
_TIMEOUT = httpx.Timeout(30.0, read=120.0)  # the stream sends a keep-alive every 15 s


class CliError(Exception):
    """A failure the command reports in one line (exit status 2)."""


def guess_language(path: Path) -> str | None:
    """The language code for a file name, from its extension (``main.py`` → ``py``)."""
    suffix = path.suffix
    for code, language in LANGUAGES.items():
        if PurePosixPath(language.source_name).suffix == suffix:
            return code
    return _EXTRA_EXTENSIONS.get(suffix.lower())


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-Sent Events from a body's lines: ``(event, data)``; comments are skipped."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


# -- talking to the server ---------------------------------------------------------------


def _client(args: argparse.Namespace) -> httpx.Client:
    url = args.url or os.environ.get("K8SI_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("K8SI_API_KEY")
    if not key:
        raise CliError("no API key: pass --api-key or set K8SI_API_KEY")
    return httpx.Client(base_url=url.rstrip("/"), headers={"X-API-Key": key}, timeout=_TIMEOUT)


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        body = response.json()
        detail = f"{body.get('error')}: {body.get('message')}"
    except (ValueError, AttributeError):
        detail = response.text[:300]
    raise CliError(f"{response.request.method} {response.request.url.path} answered "
                   f"{response.status_code} ({detail})")


def _upload(client: httpx.Client, paths: list[Path], session_id: str | None) -> str | None:
    """Upload the input files into the session; the session they landed in."""
    if not paths:
        return session_id
    handles = [path.open("rb") for path in paths]
    try:
        parts = [("files", (path.name, handle)) for path, handle in zip(paths, handles,
                                                                       strict=True)]
        response = client.post("/upload", files=parts,
                               data={"session_id": session_id} if session_id else None)
    finally:
        for handle in handles:
            handle.close()
    _check(response)
    landed: str = response.json()["session_id"]
    return landed


def _safe_target(out_dir: Path, name: str) -> Path:
    """Where a produced file is saved: inside ``out_dir``, whatever its name says."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".", "..")]
    if not parts:
        raise CliError(f"cannot save a file named {name!r}")
    target = out_dir.joinpath(*parts)
    if not target.resolve().is_relative_to(out_dir.resolve()):
        raise CliError(f"refusing to save {name!r} outside {out_dir}")
    return target


def _save_outputs(client: httpx.Client, files: list[dict[str, Any]], out_dir: Path,
                  log: TextIO) -> None:
    for entry in files:
        session = entry.get("storage_session_id") or entry.get("session_id")
        target = _safe_target(out_dir, str(entry["name"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        with client.stream("GET", f"/download/{session}/{entry['id']}") as response:
            _check(response)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        print(f"k8si: saved {target} ({entry.get('size', '?')} bytes)", file=log)


def _run_stream(client: httpx.Client, body: dict[str, Any], out: TextIO,
                err: TextIO) -> dict[str, Any]:
    """POST /exec/stream, echoing the output; the ``result`` event's body."""
    with client.stream("POST", "/exec/stream", json=body) as response:
        _check(response)
        for event, data in iter_sse(response.iter_lines()):
            payload = json.loads(data)
            if event in ("stdout", "stderr"):
                stream = out if event == "stdout" else err
                stream.write(payload["text"])
                stream.flush()
            elif event == "result":
                result: dict[str, Any] = payload
                return result
            elif event == "error":
                raise CliError(f"the server failed: {payload.get('error')}: "
                               f"{payload.get('message')}")
    raise CliError("the stream ended without a result")


def _how_it_ended(result: dict[str, Any]) -> str:
    """The server's message if any, with the program's ``exit status 3`` or ``signal``."""
    parts = []
    if isinstance(result.get("code"), int):
        parts.append(f"exit status {result['code']}")
    if result.get("signal"):
        parts.append(f"signal {result['signal']}")
    details = ", ".join(parts)
    if result.get("message"):
        return f"{result['message']} ({details})" if details else str(result["message"])
    return details


def run_exec(args: argparse.Namespace, out: TextIO = sys.stdout,
             err: TextIO = sys.stderr) -> int:
    source = Path(args.source)
    language = args.lang or guess_language(source)
    if language is None:
        raise CliError(f"cannot tell the language of {source.name!r}: pass --lang")
    try:
        code = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {source}: {exc}") from exc
    inputs = [Path(p) for p in args.file]
    for path in inputs:
        if not path.is_file():
            raise CliError(f"no such input file: {path}")
    out_dir = Path(args.out)
    with _client(args) as client:
        session_id = _upload(client, inputs, args.session)
        body: dict[str, Any] = {"lang": language, "code": code, "args": list(args.arg)}
        if session_id:
            body["session_id"] = session_id
        if args.timeout:
            body["timeout"] = args.timeout
        result = _run_stream(client, body, out, err)
        _save_outputs(client, result.get("files") or [], out_dir, err)
    for skipped in result.get("skipped_files") or []:
        print(f"k8si: not stored: {skipped.get('name')} ({skipped.get('reason')})", file=err)
    status = result.get("status")
    if status != "ok":
        print(f"k8si: {status}: {_how_it_ended(result)}".rstrip(": "), file=err)
    print(f"k8si: session {result['session_id']} (continue with --session "
          f"{result['session_id']})", file=err)
    exit_code = result.get("code")
    if isinstance(exit_code, int):
        return exit_code if status == "ok" or exit_code else 1
    return 0 if status == "ok" else 1


# -- status ------------------------------------------------------------------------------


def _status_lines(live: dict[str, Any], ready: dict[str, Any],
                  pools: dict[str, Any]) -> Iterator[str]:
    yield f"server     {live.get('status')} (version {live.get('version')})"
    yield f"ready      {ready.get('status')}: {ready.get('summary')}"
    for name, service in ready.get("services", {}).items():
        if name in ("languages", "pools"):
            continue
        detail = service.get("error") or service.get("backend") or ""
        yield f"  {name:<13} {service.get('status')} {detail}".rstrip()
    languages = ready.get("services", {}).get("languages", {})
    available = languages.get("available", {})
    yield "languages  " + (", ".join(f"{c} {v}" for c, v in available.items()) or "none")
    for code, reason in languages.get("unavailable", {}).items():
        yield f"  unavailable {code}: {reason}"
    yield f"pools      ({pools.get('backend')})"
    yield f"  {'language':<9} {'target':>6} {'warm':>5} {'starting':>8} {'claimed':>7}"
    for code, pool in pools.get("pools", {}).items():
        if any(pool.get(k) for k in ("target", "warm", "starting", "claimed")):
            yield (f"  {code:<9} {pool.get('target', 0):>6} {pool.get('warm', 0):>5} "
                   f"{pool.get('starting', 0):>8} {pool.get('claimed', 0):>7}")


def run_status(args: argparse.Namespace, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr) -> int:
    with _client(args) as client:
        live = client.get("/health")
        _check(live)
        ready = client.get("/health/ready")
        if ready.status_code not in (200, 503):
            _check(ready)
        pools = client.get("/health/pool")
        _check(pools)
    report = {"health": live.json(), "ready": ready.json(), "pools": pools.json()}
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        for line in _status_lines(report["health"], report["ready"], report["pools"]):
            out.write(line + "\n")
    return 0 if ready.status_code == 200 else 1


def _runtime_command(args: argparse.Namespace) -> int:
    if args.action == "end" and not args.id:
        raise CliError("runtime-sessions end needs the runtime session's id")
    return run_runtime_sessions(args)


def run_runtime_sessions(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``runtime-sessions list`` (a table, or ``--json``) and ``runtime-sessions end ID``
    (admin keys: ``/admin/runtime-sessions``)."""
    with _client(args) as client:
        if args.action == "end":
            response = client.delete(f"/admin/runtime-sessions/{args.id}")
            _check(response)
            out.write(f"ended {args.id}\n")
            return 0
        response = client.get("/admin/runtime-sessions",
                              params={"tenant": args.tenant} if args.tenant else None)
        _check(response)
    rows = response.json()
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    out.write(f"{'ID':<22}{'TENANT':<16}{'HINT':<30}{'AGE':>8}{'IDLE':>8}{'BYTES':>12}  KEPT\n")
    for row in rows:
        size = "-" if row["workspace_bytes"] is None else str(row["workspace_bytes"])
        out.write(f"{row['runtime_session_id']:<22}{row['tenant'][:15]:<16}"
                  f"{row['hint'][:29]:<30}{row['age_seconds']:>7.0f}s{row['idle_seconds']:>7.0f}s"
                  f"{size:>12}  {'yes' if row['kept'] else 'no'}\n")
    return 0


# -- the command line --------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server (default K8SI_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="API key (default K8SI_API_KEY)")


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace],
                                                                        int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CliError as exc:
            print(f"k8si: {exc}", file=sys.stderr)
            return 2
        except httpx.HTTPError as exc:
            print(f"k8si: cannot talk to the server: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # the connection closes: the server stops the program
            print("k8si: interrupted", file=sys.stderr)
            return 130

    return run


def add_client_commands(commands: Any) -> None:
    """Add ``exec``, ``status`` and ``runtime-sessions``; each sets ``args.client_command``
    (its exit status)."""
    exec_cmd = commands.add_parser("exec", help="run a file on a K8sInterpreter server, "
                                                "streaming its output")
    exec_cmd.add_argument("source", metavar="FILE", help="the code to run")
    exec_cmd.add_argument("--lang", help="language code (default: from FILE's extension)")
    exec_cmd.add_argument("--session", help="continue this session (its files, Python state)")
    exec_cmd.add_argument("--file", action="append", default=[], metavar="PATH",
                          help="an input file, placed in /mnt/data (repeatable)")
    exec_cmd.add_argument("--arg", action="append", default=[], metavar="ARG",
                          help="an argument for the program (repeatable)")
    exec_cmd.add_argument("--timeout", type=float, help="seconds (clamped by the server)")
    exec_cmd.add_argument("--out", default=".", help="where produced files are saved "
                                                     "(default: the current directory)")
    _connection_options(exec_cmd)
    exec_cmd.set_defaults(client_command=_guarded(run_exec))
    status_cmd = commands.add_parser("status", help="a server's health, languages and pools")
    status_cmd.add_argument("--json", action="store_true", help="print the raw JSON")
    _connection_options(status_cmd)
    status_cmd.set_defaults(client_command=_guarded(run_status))
    runtime_cmd = commands.add_parser("runtime-sessions", help="list or end runtime sessions "
                                                               "(the stateful profile; admin key)")
    runtime_cmd.add_argument("action", choices=("list", "end"))
    runtime_cmd.add_argument("id", nargs="?", help="the runtime session to end (one made by an "
                             "older version may start with '-': put '--' before it)")
    runtime_cmd.add_argument("--tenant", help="only this tenant's (list)")
    runtime_cmd.add_argument("--json", action="store_true", help="print the raw JSON (list)")
    _connection_options(runtime_cmd)
    runtime_cmd.set_defaults(client_command=_guarded(_runtime_command))
