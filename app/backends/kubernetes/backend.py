"""The Kubernetes backend: warm pods claimed by a label patch, Jobs for cold languages.

Warm path (two apiserver requests): list the language's warm, running pods; claim
one with a JSON Patch whose ``test`` makes it atomic; talk to its executor at the
pod IP. Release deletes the pod off the critical path; the Deployment refills by
itself because the claim took the pod out of its selector. Cold path (pool size 0,
or a miss when ``POD_POOL_COLD_FALLBACK``): a Job from the same pod template, whose
pod is awaited with a watch. The reaper and the pool scaler run in every replica
and keep no state of their own: leases, pool targets and last use are all labels
and annotations in the cluster. What is per replica is its ``MAX_CONCURRENT_EXECUTIONS``
execution slots (``slots.py``), as on the local backend.

A claim whose outcome the replica does not learn (its acquire cancelled while the
PATCH was in flight: a client gone; or every attempt failed after the first was in
fact applied) goes on to its end shielded, and is then settled in the background: the
pod is deleted if this claim won it (its ``k8si.io/claim-id``), so no pod stays
claimed by nobody until its lease runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

from sidecar.contract import LANGUAGES

from ...errors import NoCapacity, ServiceUnavailable
from ...executor import ExecutorClient, ExecutorError
from ...periodic import run_periodically
from ...settings import Settings
from ...shared_secret import load_key
from ..base import LanguageStatus, PoolStatus, SandboxLease
from ..tasks import BackgroundTasks
from .claims import (
    ClaimRequest,
    claim_patch,
    is_ready,
    shuffled_candidates,
    warm_selector,
    won_by,
)
from .client import DEPLOYMENTS, PODS, KubeClient, KubeError
from .held import Held, HeldPods, executor_port, executor_url, unavailable
from .jobs import JobRunner
from .pools import PoolScaler
from .reaper import maintain
from .slots import ExecutionSlots
from .templates import LABEL_COMPONENT, LABEL_LANGUAGE, LABEL_STATE, PodTemplates

__all__ = ["KubernetesBackend"]

logger = logging.getLogger(__name__)


class KubernetesBackend(HeldPods):
    """Sandboxes as pods of a Kubernetes cluster (``EXECUTION_BACKEND=kubernetes``)."""

    name = "kubernetes"
    #: Whether ``keep``/``reclaim`` work here (runtime sessions, the ``stateful`` profile).
    keeps_sandboxes = True

    def __init__(self, settings: Settings, client: KubeClient | None = None) -> None:
        self.settings = settings
        self.config = settings.kubernetes
        self.templates = PodTemplates(self.config)
        self.replica = f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"
        self.client = client
        self._held: dict[str, Held] = {}
        self._slots = ExecutionSlots(settings.max_concurrent_executions,
                                     settings.queue_timeout)
        self._versions: dict[str, str | None] = {}
        self._tasks = BackgroundTasks(logger)
        self._scaler: PoolScaler | None = None
        self._jobs: JobRunner | None = None
        self._maintenance: asyncio.Task[None] | None = None
        #: Replaced by the replicas' shared one in ``start`` (a key of this replica's
        #: own until then).
        self._token_key = secrets.token_bytes(32)
        self.stats = {"pool_hits": 0, "pool_misses": 0, "claim_conflicts": 0,
                      "cold_starts": 0, "reaped": 0}

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        shared = load_key(self.settings.state.hmac_key, self.settings.data_dir)
        self._token_key = hmac.new(shared, b"k8si sandbox executor tokens",
                                   hashlib.sha256).digest()
        if self.client is None:
            self.client = await KubeClient.connect(self.config.kubeconfig, self.config.namespace,
                                                   self.config.request_timeout)
        self._scaler = PoolScaler(self.client, self.templates, self.settings)
        self._jobs = JobRunner(self.client, self.templates, self.config)
        await self._scaler.ensure_pools()
        self._maintenance = self._tasks.spawn(self._maintenance_loop())

    async def stop(self) -> None:
        # Releases in flight finish (their pods must not wait for the reaper);
        # only the maintenance loop is cancelled.
        if self._maintenance is not None:
            self._maintenance.cancel()
        await self._tasks.wait()
        held = list(self._held.values())
        self._held.clear()
        self._slots.clear()
        results = await asyncio.gather(*(self._delete(h) for h in held), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.error("sandbox release failed at shutdown", exc_info=result)

    async def _maintenance_loop(self) -> None:
        """Reap expired leases and shrink idle pools; every replica does it, idempotently."""
        client, scaler = self.client, self._scaler
        assert client is not None and scaler is not None

        async def maintenance_pass() -> None:
            self.stats["reaped"] += await maintain(client, scaler)

        await run_periodically(maintenance_pass, self.config.reap_interval,
                               what="maintenance pass", logger=logger,
                               expected=(KubeError, ServiceUnavailable))

    # -- languages ----------------------------------------------------------------

    async def languages(self) -> Mapping[str, LanguageStatus]:
        """Every language has an image; versions are learnt from the first pod of each."""
        return {code: LanguageStatus(code, True, version=self._versions.get(code))
                for code in LANGUAGES}

    # -- the seam -----------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """Execution slots free now (of ``MAX_CONCURRENT_EXECUTIONS``)."""
        return self._slots.free

    async def acquire(self, language: str, session_id: str, tenant: str = "",
                      lease_seconds: int | None = None,
                      deadline_seconds: int | None = None) -> SandboxLease:
        if self.client is None or self._scaler is None or self._jobs is None:
            raise ServiceUnavailable("the Kubernetes backend has not started")
        await self._slots.take()
        try:
            return await self._acquire(language, session_id, tenant, lease_seconds,
                                       deadline_seconds)
        except BaseException:
            self._slots.give_back()
            raise

    async def _acquire(self, language: str, session_id: str, tenant: str,
                       lease_seconds: int | None, deadline_seconds: int | None,
                       ) -> SandboxLease:
        """``acquire`` once its slot is taken: the slot is the lease's on success."""
        assert self._scaler is not None and self._jobs is not None
        claim = ClaimRequest(session_id=session_id, tenant=tenant or "default",
                             replica=self.replica,
                             lease_seconds=self._lease(lease_seconds),
                             deadline_seconds=deadline_seconds)
        try:
            pod = (await self._claim_warm(language, claim)
                   if self.settings.pool_size(language) > 0 else None)
        except KubeError as exc:
            raise unavailable("claim", exc) from exc
        if pod is not None:
            self.stats["pool_hits"] += 1
            name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
            port = executor_port("pod", pod, self.config.executor_port)  # its own, if older
            uid = str(pod["metadata"].get("uid", ""))
            held = Held("pod", name, self.executor_client("pod", name, uid,
                                                          executor_url(ip, port)), uid)
            hit = True
        else:
            if self.settings.pool_size(language) > 0:
                self.stats["pool_misses"] += 1
                self._tasks.spawn(self._scaler.grow(language))
                if not self.config.cold_fallback:
                    raise NoCapacity(f"no warm {language} sandbox; try again shortly",
                                     retry_after=2)
            self.stats["cold_starts"] += 1
            try:
                name, ip, uid = await self._jobs.start(
                    language, claim, self.settings.queue_timeout + self.settings.compile_timeout)
            except KubeError as exc:
                raise ServiceUnavailable(f"could not start a {language} Job", retry_after=2,
                                         detail=str(exc)) from exc
            held = Held("job", name, self.executor_client(
                "job", name, uid, executor_url(ip, self.config.executor_port)), uid)
            hit = False
        try:
            if not hit:
                try:
                    await held.executor.wait_ready(timeout=30)
                except ExecutorError as exc:
                    raise ServiceUnavailable(f"the {language} Job's executor did not answer",
                                             retry_after=2, detail=str(exc)) from exc
            if language not in self._versions:
                # Once per language and replica: one executor request, no apiserver call.
                await self._learn_version(language, held.executor)
        except BaseException:
            # Failed or cancelled (a client gone) before the lease was handed out: nobody
            # would release what was claimed or started.
            await asyncio.shield(self._delete_or_leave(held))
            raise
        sandbox_id = f"{held.kind}/{held.name}"
        self._held[sandbox_id] = held
        if hit:  # bookkeeping for scale-to-zero, off the critical path
            self._tasks.spawn(self._scaler.record_claim(language))
        return SandboxLease(sandbox_id=sandbox_id, language=language, session_id=session_id,
                            executor_address=str(held.executor.address),
                            executor=held.executor, pool_hit=hit)

    async def _claim_warm(self, language: str, claim: ClaimRequest) -> dict[str, Any] | None:
        """At most two requests: one list, one patch that wins (or a few that lose)."""
        assert self.client is not None
        listed = await self.client.list_objects(PODS, **warm_selector(language))
        for pod in shuffled_candidates(listed.get("items", [])):
            won = await self._claim_pod(pod, claim)
            if won is not None:
                return won
        return None

    async def _claim_pod(self, pod: dict[str, Any], claim: ClaimRequest,
                         ) -> dict[str, Any] | None:
        """``pod`` claimed by ``claim``, or None when another replica won it. The claim
        runs shielded: cancelled, or failed with its outcome unknown, the caller's
        exception goes on at once and the claim is settled in the background (the pod
        deleted if it was won after all)."""
        name = pod["metadata"]["name"]
        attempt = asyncio.ensure_future(self._try_claim(name, claim_patch(pod, claim), claim))
        try:
            return await asyncio.shield(attempt)
        except BaseException:
            self._tasks.spawn(self._settle_claim(attempt, name, claim))
            raise

    async def _try_claim(self, name: str, patch: list[dict[str, Any]], claim: ClaimRequest,
                         ) -> dict[str, Any] | None:
        """The pod if the patch won it; None if another replica did. ``KubeError`` when
        the outcome is unknown (every attempt failed: the first may have been applied)."""
        assert self.client is not None
        try:
            return await self.client.json_patch(PODS, name, patch)
        except KubeError as exc:
            if exc.status not in (404, 409, 422):
                raise
            # Another replica won it (next one), unless the patch was ours after all: sent
            # again after its answer was lost (a retried attempt), the second one's test
            # fails.
            self.stats["claim_conflicts"] += 1
            if exc.status == 422 and exc.attempts > 1:
                current = await self.client.get(PODS, name)
                return current if won_by(current, claim) else None
            return None

    async def _settle_claim(self, attempt: asyncio.Future[dict[str, Any] | None], name: str,
                            claim: ClaimRequest) -> None:
        """After an acquire that gave up on ``attempt`` (cancelled, or its outcome unknown):
        the pod is deleted if ``claim`` won it; if the apiserver cannot say or refuses the
        delete, it is the reaper's when its lease ends."""
        assert self.client is not None
        try:
            won = await attempt
            if won is None:
                return  # another replica's: nothing of ours to undo
        except KubeError:  # the outcome is unknown: asked
            try:
                current = await self.client.get(PODS, name)
            except KubeError as exc:
                if exc.status != 404:
                    logger.warning("abandoned claim left to the reaper",
                                   extra={"pod": name, "error": str(exc)})
                return
            if not won_by(current, claim):
                return
        try:
            await self.client.delete(PODS, name)  # ours, never handed out: never warm again
        except KubeError as exc:
            logger.warning("abandoned claim left to the reaper",
                           extra={"pod": name, "error": str(exc)})
            return
        logger.info("abandoned claim deleted", extra={"pod": name})

    async def _delete_or_leave(self, held: Held) -> None:
        """Delete what a failed acquire claimed; if the apiserver refuses, the reaper
        deletes it when its lease ends (the acquire's own error is the one to raise)."""
        try:
            await self._delete(held)
        except KubeError as exc:
            logger.warning("claimed sandbox left to the reaper",
                           extra={"sandbox": f"{held.kind}/{held.name}", "error": str(exc)})

    async def _learn_version(self, language: str, executor: ExecutorClient) -> None:
        try:
            self._versions[language] = await executor.version()
        except ExecutorError as exc:
            logger.warning("version probe failed", extra={"language": language,
                                                          "error": str(exc)})

    # -- health -------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        if self.client is None:
            return {"ok": False, "backend": self.name, "error": "not started"}
        try:
            started = time.monotonic()
            await self.client.list_objects(DEPLOYMENTS, limit="1")
            latency = round((time.monotonic() - started) * 1000, 1)
        except KubeError as exc:
            return {"ok": False, "backend": self.name, "namespace": self.client.namespace,
                    "error": str(exc)}
        return {"ok": True, "backend": self.name, "namespace": self.client.namespace,
                "apiserver_ms": latency, "replica": self.replica, "held": len(self._held),
                **self.stats}

    async def pools(self) -> Mapping[str, PoolStatus]:
        """Counts as the cluster reports them: warm (ready), pending, claimed."""
        assert self.client is not None
        try:
            listed = await self.client.list_objects(PODS,
                                                    labelSelector=f"{LABEL_COMPONENT}=sandbox")
        except KubeError as exc:
            raise unavailable("pools", exc) from exc
        counts: dict[str, dict[str, int]] = {}
        for pod in listed.get("items", []):
            labels = pod["metadata"].get("labels", {})
            lang = labels.get(LABEL_LANGUAGE)
            if lang not in LANGUAGES:
                continue
            entry = counts.setdefault(lang, {"warm": 0, "starting": 0, "claimed": 0})
            if labels.get(LABEL_STATE) == "claimed" or "job-name" in labels:
                entry["claimed"] += 1
            elif is_ready(pod):
                entry["warm"] += 1
            else:
                entry["starting"] += 1
        return {code: PoolStatus(target=self.settings.pool_size(code),
                                 **counts.get(code, {"warm": 0, "starting": 0, "claimed": 0}))
                for code in LANGUAGES}
