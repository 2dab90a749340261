"""The executor's HTTP server: the routes of the executor contract.

``POST /execute``, ``POST /execute/stream`` (the same, answered as NDJSON lines while
the program runs; see ``sidecar/stream.py``), ``POST /files`` (multipart),
``PUT /files/{path}`` (raw, streamed), ``GET /files``, ``GET /files/{path}``,
``GET /health`` (``?wait=S`` answers once the sandbox is ready, or after S seconds:
one request instead of polling), ``POST /execute/continue`` and ``POST /execute/cancel``
(a programmatic run: ``/execute`` with ``tools``, see ``ptc_session.py``),
``GET /calibration`` (in a sandbox started with
``--calibrate``, after its execution: the pages it wrote, see ``prefault.py``),
``DELETE /files/{path}`` (remove one file or link, never following it), ``POST /keep``
(see below). Every route but ``GET /health`` serves only the API that claimed the
sandbox: a request without a token (``X-Executor-Token``) is refused (403), and the
first token presented binds the sandbox to it (``--serve-unbound``, for tests, serves
token-less requests until then). User code
shares a pod's network with its executor, and on a cluster whose NetworkPolicy is not
enforced it can reach other sandboxes' executors too: it must not read their files,
run code in them or cancel their runs. The result of an execution also lists the work
dir's files, as ``GET /files`` would right after it. Served on TCP (a pod) or a unix socket (local
sandbox), either bound here or inherited as an already-listening fd.

One execution per sandbox: a second ``/execute`` (streamed or not) answers 409, unless
the API asked for a kept sandbox with ``POST /keep`` before its first execution (a
runtime session, ``kept.py``): then each ``/execute`` is a new process of the same
sandbox, ``/mnt/data`` kept, the scratch space wiped in between; a ``/execute`` that
arrives while the sandbox is still being made ready (or a programmatic run is paused
in it) waits for it (up to ``KEPT_WAIT`` seconds, then 409).

What a finished run leaves stopped (``capture.freeze_all``: the warm worker that
reported its end) is killed by the sandbox's destruction right after the answer, or,
in a kept sandbox, before its next run: never while the answer is on its way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from typing import Any

from .file_routes import FileRoutes
from .files import WorkDir
from .kept import rearm, scratch_dirs
from .protocol import (
    MAX_EXECUTE_BODY,
    TOKEN_HEADER,
    ExecuteRequest,
    ExecuteResult,
    ProtocolError,
    parse_continue,
    parse_keep,
    valid_token,
)
from .ptc_session import Programmatic
from .runner import Runner, WarmUpError
from .stream import LineStream
from .version import probe_version

__all__ = ["ExecutorServer", "log"]


def log(event: str, **fields: Any) -> None:
    """One structured log line (JSON) on stderr."""
    record = {"ts": round(time.time(), 3), "component": "executor", "event": event, **fields}
    sys.stderr.write(json.dumps(record, default=str) + "\n")
    sys.stderr.flush()


#: The largest ``/execute/continue`` body (the tool results of one round).
MAX_CONTINUE_BODY = 64 * 1024 * 1024
#: The longest ``GET /health?wait=S`` holds its answer until the sandbox is ready.
MAX_HEALTH_WAIT = 60.0
#: How long a kept sandbox's ``/execute`` waits for the previous run's clean-up.
KEPT_WAIT = 60.0
#: The largest ``/keep`` body (a token).
MAX_KEEP_BODY = 4096


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _wait_seconds(target: str) -> float:
    """``wait`` of ``/health?wait=S``: answer once ready, or after S seconds (default 0)."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("wait", ["0"])
    try:
        seconds = float(values[0])
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_HEALTH_WAIT) if math.isfinite(seconds) else 0.0


class ExecutorServer(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """Serves the executor contract on a listening socket it was given or bound."""

    daemon_threads = True

    def __init__(self, listener: socket.socket, runner: Runner, workdir: WorkDir,
                 max_upload_bytes: int, *, token_required: bool = True) -> None:
        super().__init__(listener.getsockname(), _Handler)
        self.socket = listener
        self.runner = runner
        self.programmatic = Programmatic(runner)
        self.workdir = workdir
        self.max_upload_bytes = max_upload_bytes
        self.execute_lock = threading.Lock()
        self.used = False
        #: Asked for by ``POST /keep``: further executions are accepted (``kept.py``).
        self.kept = False
        #: The sha256 of the first token a request presented (None: none yet). Only its
        #: digest is kept in memory: a warm worker forked from this process cannot learn
        #: the token, and this process is non-dumpable (``limits.harden_executor``).
        self.token_digest: bytes | None = None
        self._token_lock = threading.Lock()
        #: Refuse token-less requests even before a token binds the sandbox (all but
        #: ``--serve-unbound`` executors of tests): a neighbour cannot plant files in a
        #: warm sandbox that a tenant's code will run among. It can only bind one to
        #: itself: the API's request on it is then refused, answered 503 (try again),
        #: and the sandbox goes.
        self.token_required = token_required
        self.scratch = scratch_dirs(runner.config.build_dir)

    def present(self, token: str) -> bool:
        """Whether ``token`` is this sandbox's: the first one shown becomes it."""
        if not valid_token(token):
            return False
        digest = _digest(token)
        with self._token_lock:
            if self.token_digest is None:
                self.token_digest = digest
                return True
        return hmac.compare_digest(digest, self.token_digest)

    def admits(self, target: str, token: str | None) -> bool:
        """Whether a request for ``target`` presenting ``token`` (None: no header) is
        served: ``/health`` always (probes, no data), others once the token is right, or
        without one while none was ever shown, unless ``token_required``."""
        if urllib.parse.urlsplit(target).path == "/health":
            return True
        if token is None:
            with self._token_lock:
                return self.token_digest is None and not self.token_required
        return self.present(token)

    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self) -> tuple[socket.socket, Any]:
        return self.socket.accept()

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):  # the peer already closed
            request.shutdown(socket.SHUT_WR)
        request.close()


class _Handler(FileRoutes):
    server: ExecutorServer

    def address_string(self) -> str:
        return str(self.client_address or "unix")

    def log_message(self, format: str, *args: Any) -> None:
        log("http", line=format % args)

    def _admitted(self) -> bool:
        """The one gate of every route (``ExecutorServer.admits``), right after the head."""
        if self.server.admits(self.path, self.headers.get(TOKEN_HEADER)):
            return True
        log("request.refused", reason="token", method=self.command,
            path=urllib.parse.urlsplit(self.path).path[:200])
        self._error(403, "this sandbox serves only the API that claimed it")
        return False

    # -- routes -------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            try:
                ready = self.server.runner.wait_ready(timeout=_wait_seconds(self.path))
            except WarmUpError as exc:
                self._send_json(500, {"status": "failed", "error": "warm_up_failed",
                                      "message": str(exc)})
                return
            body: dict[str, Any] = {
                    "status": "ready" if ready else "starting",
                    "language": self.server.runner.language.code, "used": self.server.used,
                    "kept": self.server.kept,
                    "warm_failures": self.server.runner.warm_failures}
            if "version=1" in urllib.parse.urlsplit(self.path).query:
                runner = self.server.runner
                body["version"] = probe_version(runner.language, runner.config.user_env)
            self._send_json(200 if ready else 503, body)
        elif path == "/files":
            self._send_json(200, {"files": self._listing()})
        elif path == "/calibration":
            pages = self.server.runner.calibration()
            if pages is None:
                self._error(404, "no calibration here (not a calibration sandbox, "
                                 "or no execution yet)")
            else:
                self._send_json(200, pages)
        elif path.startswith("/files/"):
            self._send_file(urllib.parse.unquote(path[len("/files/"):]))
        else:
            self._error(404, "no such route")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/execute":
            self._execute()
        elif path == "/execute/stream":
            self._execute_stream()
        elif path == "/execute/continue":
            self._continue()
        elif path == "/execute/cancel":
            self._send_json(200, {"cancelled": self.server.programmatic.cancel()})
        elif path == "/files":
            self._upload()
        elif path == "/keep":
            self._keep()
        else:
            self._error(404, "no such route")

    def _keep(self) -> None:
        """Make this sandbox a kept one (before its first execution only). The body may
        carry ``{"token": ...}`` (an API of an older release sends it only there): it
        binds the sandbox as a presented header does (``ExecutorServer.present``)."""
        body = self._read_body(MAX_KEEP_BODY)
        if body is None:
            return
        try:
            token = parse_keep(json.loads(body) if body else {})
        except (ValueError, ProtocolError) as exc:
            self._error(400, str(exc))
            return
        if token is not None and not self.server.present(token):
            self._error(403, "this sandbox serves only the API that claimed it")
            return
        with self.server.execute_lock:
            if self.server.used:
                self._error(409, "this sandbox has already run: only a fresh one can be kept")
                return
            self.server.kept = True
        log("kept", token=self.server.token_digest is not None)
        self._send_json(200, {"kept": True})

    def _begin_execute(self) -> ExecuteRequest | None:
        """The request, once this sandbox's one execution is claimed for it (else answered)."""
        body = self._read_body(MAX_EXECUTE_BODY)
        if body is None:
            return None
        try:
            request = ExecuteRequest.from_json(json.loads(body))
        except (ValueError, ProtocolError) as exc:
            self._error(400, str(exc))
            return None
        if request.lang != self.server.runner.language.code:
            self._error(400, f"this sandbox runs {self.server.runner.language.code!r}")
            return None
        if self.server.kept:
            if not self.server.execute_lock.acquire(timeout=KEPT_WAIT):
                self._error(409, "this kept sandbox is busy")
                return None
        elif not self.server.execute_lock.acquire(blocking=False):
            self._error(409, "this sandbox has already run its one execution")
            return None
        elif self.server.used:
            self.server.execute_lock.release()
            self._error(409, "this sandbox has already run its one execution")
            return None
        self.server.used = True
        log("execute.start", request_id=request.request_id, lang=request.lang)
        return request

    def _listing(self) -> list[dict[str, Any]]:
        """The work dir's regular files, as ``GET /files`` answers them."""
        return [{key: value for key, value in entry.__dict__.items()
                 if key != "skipped" or value is not None}
                for entry in self.server.workdir.list()]

    def _finish_result(self, result: ExecuteResult) -> ExecuteResult:
        """The work dir's files after the run (what ``GET /files`` lists), in the result:
        the API collects outputs without a second round trip."""
        result.files = self._listing()
        return result

    def _execute(self) -> None:
        request = self._begin_execute()
        if request is None:
            return
        result: ExecuteResult | None = None
        try:
            try:
                result = (self._finish_result(self.server.runner.execute(request))
                          if request.tools is None
                          else self._finish_step(self.server.programmatic.start(request)))
            except WarmUpError as exc:
                log("execute.failed", request_id=request.request_id, error=str(exc))
                self._error(500, str(exc))
                return
            log("execute.end", request_id=request.request_id, status=result.status,
                wall_time=result.wall_time)
        finally:
            self._end_run(paused=result is not None and result.status == "tool_call_required")
        self._send_json(200, result.to_json())

    def _end_run(self, paused: bool = False) -> None:
        """The run is over: an ordinary sandbox is done; a kept one is made ready for
        the next run in the background, still under the execution lock (a paused
        programmatic run holds it until its last step, ``_continue``)."""
        if not self.server.kept:
            self.server.execute_lock.release()
            return
        if paused:
            return
        threading.Thread(target=rearm, name="rearm", daemon=True, args=(
            self.server.runner, self.server.scratch, self.server.execute_lock, log)).start()

    def _finish_step(self, result: ExecuteResult) -> ExecuteResult:
        """A programmatic step: a pause as it is, the end with the work dir's files."""
        return result if result.status == "tool_call_required" else self._finish_result(result)

    def _continue(self) -> None:
        """The next step of the paused programmatic run, with the client's results."""
        body = self._read_body(MAX_CONTINUE_BODY)
        if body is None:
            return
        try:
            results, timeout = parse_continue(json.loads(body))
        except (ValueError, ProtocolError) as exc:
            self._error(400, str(exc))
            return
        result = self.server.programmatic.resume(results, timeout)
        if result is None:
            self._error(409, "no programmatic run is paused in this sandbox")
            return
        result = self._finish_step(result)
        log("execute.step", request_id=result.request_id, status=result.status,
            wall_time=result.wall_time)
        if self.server.kept and result.status != "tool_call_required":
            self._end_run()  # the programmatic run is over: ready for the next run
        self._send_json(200, result.to_json())

    def _execute_stream(self) -> None:
        """Like ``_execute``, answered as NDJSON lines while the program runs."""
        request = self._begin_execute()
        if request is None:
            return
        self.close_connection = True  # one streamed execution per connection
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            lines = LineStream(self.connection, self.wfile)
            try:
                result = self.server.runner.execute(request, lines)
                if not lines.hung_up():
                    result = self._finish_result(result)
            except WarmUpError as exc:
                log("execute.failed", request_id=request.request_id, error=str(exc))
                lines.send({"error": "warm_up_failed", "message": str(exc)})
                lines.close()
                return
        finally:
            self._end_run()
        if lines.hung_up():
            log("execute.abandoned", request_id=request.request_id,
                wall_time=result.wall_time)
        else:
            log("execute.end", request_id=request.request_id, status=result.status,
                wall_time=result.wall_time, streamed=True)
            lines.send({"result": result.to_json()})
        lines.close()
