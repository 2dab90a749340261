"""Prometheus metrics of one app instance, and the phase timer of one execution.

``Metrics`` owns a ``CollectorRegistry`` of its own (never the process-wide default),
so several apps in one process (the tests) do not collide. It is exposed at
``GET /metrics`` (``app/domain/metrics``). Only aggregate numbers are kept: labels are
languages, statuses, phases and outcomes, never tenants, sessions or ids.

The exec service marks the end of each phase with ``lap(phase)``; ``timed`` wraps
``ExecService.execute`` and keeps the current ``ExecutionTimer`` in a context
variable, so neither the service nor the backend passes it around. The local
backend reports the time spent waiting for a slot with ``note_phase("queue", s)``
(taken out of ``acquire``) and its sandbox starts through ``SandboxObserver``; the
exec service takes the state's restore and capture inside the sandbox, as the
executor reports them, out of ``run`` the same way.

Phases: ``prepare`` (validation, session, input lookup), ``state`` (loading and
storing Python state), ``queue`` (waiting for an execution slot), ``acquire``
(taking a warm sandbox or starting one), ``stage_in``, ``run``, ``stage_out``; for
Python sessions also ``state_restore`` and ``state_capture`` (in the sandbox).

The request id of the execution is also kept in a context variable, and
``RequestIdFilter`` adds it to every log record of that request that does not
carry one already.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["PHASES", "STATE_PHASES", "ExecutionTimer", "Metrics", "RequestIdFilter",
           "SandboxObserver", "current_request_id", "install_log_context", "lap", "note_phase",
           "timed"]

P = ParamSpec("P")
R = TypeVar("R")

PHASES = ("prepare", "state", "queue", "acquire", "stage_in", "run", "stage_out")
#: Phases of Python executions in a session only.
STATE_PHASES = ("state_restore", "state_capture")
#: From a warm print(1) (a few ms) to the longest timeout (minutes).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0)
_PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 5.0, 30.0)
_START_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_CURRENT: ContextVar[ExecutionTimer | None] = ContextVar("k8si_execution", default=None)
_REQUEST_ID: ContextVar[str | None] = ContextVar("k8si_request_id", default=None)


class SandboxObserver(Protocol):
    """What a backend reports about the sandboxes it starts."""

    def sandbox_started(self, language: str, seconds: float, ok: bool) -> None:
        """One sandbox start (warm-up, refill or a pool miss) and how long it took."""


class _PoolCollector(Collector):
    """Warm, starting and claimed sandboxes per language, read at scrape time."""

    def __init__(self, backend: object) -> None:
        self._backend = backend

    def collect(self) -> Iterable[Metric]:
        counts = getattr(self._backend, "pool_counts", None)
        family = GaugeMetricFamily("k8si_pool_sandboxes", "Sandboxes of the warm pools held "
                                   "by this process, per language and state",
                                   labels=["language", "state"])
        if callable(counts):
            for language, pool in counts().items():
                if pool.target or pool.warm or pool.starting or pool.claimed:
                    for state in ("target", "warm", "starting", "claimed"):
                        family.add_metric([language, state], getattr(pool, state))
        yield family


class Metrics:
    """The metrics of one app instance (its own registry)."""

    def __init__(self, backend: object | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.executions = Counter("k8si_executions", "Executions by language and status "
                                  "(program statuses, or the error code of a refused request)",
                                  ["language", "status"], registry=registry)
        self.latency = Histogram("k8si_execution_duration_seconds", "End-to-end time of "
                                 "POST /exec in the service", ["language"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.phases = Histogram("k8si_execution_phase_seconds", "Time of each phase of an "
                                "execution", ["phase"], buckets=_PHASE_BUCKETS,
                                registry=registry)
        self.pool_claims = Counter("k8si_pool_claims", "Sandboxes claimed: hit (warm from a "
                                   "pool) or miss (started on demand)", ["language", "result"],
                                   registry=registry)
        self.sandbox_starts = Counter("k8si_sandbox_starts", "Sandboxes started by this "
                                      "process", ["language", "outcome"], registry=registry)
        self.sandbox_start_seconds = Histogram(
            "k8si_sandbox_start_duration_seconds", "Time from start to a ready executor",
            ["language"], buckets=_START_BUCKETS, registry=registry)
        self.in_flight = Gauge("k8si_executions_in_flight", "Executions being served now",
                               registry=registry)
        self.active_sessions = Gauge("k8si_active_sessions", "Sessions with an execution in "
                                     "flight", registry=registry)
        self._sessions: dict[str, int] = {}
        if backend is not None:
            registry.register(_PoolCollector(backend))
            if hasattr(backend, "observer"):
                backend.observer = self

    # -- SandboxObserver ------------------------------------------------------------

    def sandbox_started(self, language: str, seconds: float, ok: bool) -> None:
        self.sandbox_starts.labels(language, "ok" if ok else "failed").inc()
        if ok:
            self.sandbox_start_seconds.labels(language).observe(seconds)

    # -- sessions in flight ---------------------------------------------------------

    def session_entered(self, session_id: str) -> None:
        self._sessions[session_id] = self._sessions.get(session_id, 0) + 1
        self.active_sessions.set(len(self._sessions))

    def session_left(self, session_id: str) -> None:
        left = self._sessions.get(session_id, 0) - 1
        if left > 0:
            self._sessions[session_id] = left
        else:
            self._sessions.pop(session_id, None)
        self.active_sessions.set(len(self._sessions))


class ExecutionTimer:
    """Phase times of one execution; finished once, by ``timed``."""

    __slots__ = ("_last", "_noted", "_started", "language", "metrics", "phases", "pool_hit",
                 "session_id")

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self._started = self._last = time.perf_counter()
        self._noted = 0.0
        self.phases: dict[str, float] = {}
        self.language = "unknown"
        self.pool_hit: bool | None = None
        self.session_id: str | None = None

    def lap(self, phase: str, *, language: str | None = None, session_id: str | None = None,
            pool_hit: bool | None = None) -> None:
        """The time since the previous lap (less what was noted meanwhile) was ``phase``."""
        now = time.perf_counter()
        spent = max(0.0, now - self._last - self._noted)
        self.phases[phase] = self.phases.get(phase, 0.0) + spent
        self._last, self._noted = now, 0.0
        if language is not None:
            self.language = language
        if pool_hit is not None:
            self.pool_hit = pool_hit
        if session_id is not None and self.session_id is None and self.metrics is not None:
            self.session_id = session_id
            self.metrics.session_entered(session_id)

    def note(self, phase: str, seconds: float) -> None:
        """A part of the current phase that belongs to ``phase`` (e.g. the slot queue)."""
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self._noted += seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def finish(self, status: str) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        language = self.language
        metrics.executions.labels(language, status).inc()
        metrics.latency.labels(language).observe(self.elapsed)
        for phase, seconds in self.phases.items():
            metrics.phases.labels(phase).observe(seconds)
        if self.pool_hit is not None:
            metrics.pool_claims.labels(language, "hit" if self.pool_hit else "miss").inc()
        if self.session_id is not None:
            metrics.session_left(self.session_id)


def lap(phase: str, *, language: str | None = None, session_id: str | None = None,
        pool_hit: bool | None = None) -> None:
    """Mark the end of ``phase`` of the current execution (no-op outside one)."""
    timer = _CURRENT.get()
    if timer is not None:
        timer.lap(phase, language=language, session_id=session_id, pool_hit=pool_hit)


def note_phase(phase: str, seconds: float) -> None:
    """Time of the current phase spent in ``phase`` instead (e.g. the backend's queue)."""
    timer = _CURRENT.get()
    if timer is not None:
        timer.note(phase, seconds)


def current_request_id() -> str | None:
    """The request id of the execution this code runs for, if any."""
    return _REQUEST_ID.get()


def timed(method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
          ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """Wrap ``execute(self, ..., request_id)``: time it and count it in ``self.metrics``.

    The status is the result's ``status``, or the ``code`` of the error it raised.
    """
    names = list(inspect.signature(method).parameters)
    position = names.index("request_id") - 1 if "request_id" in names else None

    @functools.wraps(method)
    async def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        request_id = kwargs.get("request_id")
        if request_id is None and position is not None and len(args) > position:
            request_id = args[position]
        if isinstance(request_id, str):
            _REQUEST_ID.set(request_id)  # stays for the rest of the request's task (logs)
        metrics = getattr(self, "metrics", None)
        timer = ExecutionTimer(metrics if isinstance(metrics, Metrics) else None)
        token = _CURRENT.set(timer)
        if timer.metrics is not None:
            timer.metrics.in_flight.inc()
        status = "internal_error"
        try:
            result = await method(self, *args, **kwargs)
            status = str(getattr(result, "status", "ok"))
            return result
        except BaseException as exc:
            status = str(getattr(exc, "code", None) or type(exc).__name__)
            raise
        finally:
            _CURRENT.reset(token)
            if timer.metrics is not None:
                timer.metrics.in_flight.dec()
            timer.finish(status)

    return wrapper


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = _REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def install_log_context() -> None:
    """Request ids on every root handler's records; httpx's per-request lines off.

    httpx logs each executor call at INFO (three or four lines per execution on the
    hot path); its warnings still pass.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    logging.getLogger("httpx").setLevel(logging.WARNING)
