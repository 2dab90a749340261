"""The Job controller, with the TTL-after-finished controller folded in.

A Job runs ``completions`` pods (``parallelism`` at a time) from its template,
named ``<job>-<suffix>`` and labelled ``job-name``/``controller-uid`` (both the
legacy and the ``batch.kubernetes.io/`` keys). ``status.succeeded``/``failed`` count
finished pods cumulatively; a pod that disappears before finishing counts as
failed. The Job fails when ``failed > backoffLimit`` (``BackoffLimitExceeded``),
when it ran longer than ``activeDeadlineSeconds`` (``DeadlineExceeded``) or when a
``podFailurePolicy`` ``FailJob`` rule matches a failed pod's exit code
(``PodFailurePolicy``; ``Ignore`` rules keep the failure from counting); it
completes when ``succeeded >= completions``. Finishing deletes its active pods.
With ``ttlSecondsAfterFinished`` the finished Job is deleted that many seconds
after its ``Complete``/``Failed`` condition, pods included. Retries are created
without the cluster's exponential back-off.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from .controllers import controller_ref, owner_reference, pod_is_active, pod_is_ready, set_condition
from .errors import ApiError
from .operations import Cluster
from .resources import JOBS, PODS
from .validation import format_time, parse_time

__all__ = ["JobController"]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


def _finished(job: Obj) -> Obj | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return dict(condition)
    return None


def _exit_codes(pod: Obj) -> list[tuple[str, int]]:
    codes = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is not None:
            codes.append((str(status.get("name")), int(terminated.get("exitCode", 0))))
    return codes


def _policy_action(job: Obj, pod: Obj) -> tuple[str, str] | None:
    """The (action, message) of the first ``podFailurePolicy`` rule matching ``pod``."""
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    meta = pod["metadata"]
    for index, rule in enumerate(rules):
        on_codes = rule.get("onExitCodes")
        if on_codes:
            values = set(on_codes.get("values") or [])
            for name, code in _exit_codes(pod):
                if on_codes.get("containerName") not in (None, name):
                    continue
                hit = code in values if on_codes.get("operator") == "In" else \
                    (code != 0 and code not in values)
                if hit:
                    return str(rule.get("action")), (
                        f"Container {name} for pod {meta['namespace']}/{meta['name']} failed "
                        f"with exit code {code} matching {rule.get('action')} rule at index "
                        f"{index}")
        for wanted in rule.get("onPodConditions") or []:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == wanted.get("type") and \
                        condition.get("status") == wanted.get("status", "True"):
                    return str(rule.get("action")), (
                        f"Pod {meta['namespace']}/{meta['name']} has condition "
                        f"{wanted.get('type')} matching {rule.get('action')} rule at index "
                        f"{index}")
    return None


class JobController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: Per Job uid: pod uids seen, and pod uids already counted as finished.
        self._seen: dict[str, set[str]] = {}
        self._counted: dict[str, set[str]] = {}

    def reconcile(self, now: float) -> float | None:
        wakes: list[float] = []
        live = set()
        for job in self.cluster.store.objects(JOBS):
            live.add(job["metadata"]["uid"])
            if job["metadata"].get("deletionTimestamp"):
                continue
            wake = self._sync(job, now)
            if wake is not None:
                wakes.append(wake)
        for uid in set(self._seen) - live:
            self._seen.pop(uid, None)
            self._counted.pop(uid, None)
        return min(wakes) if wakes else None

    def _sync(self, job: Obj, now: float) -> float | None:
        meta, spec = job["metadata"], job.get("spec") or {}
        finished = _finished(job)
        if finished is not None:
            return self._expire(job, finished, now)
        if spec.get("suspend"):
            return None
        uid, namespace = meta["uid"], meta["namespace"]
        pods = [p for p in self.cluster.select(PODS, namespace)
                if (controller_ref(p) or {}).get("uid") == uid]
        seen = self._seen.setdefault(uid, set())
        counted = self._counted.setdefault(uid, set())
        succeeded, failed = 0, 0
        verdict: tuple[str, str] | None = None
        for pod in pods:
            pod_uid, phase = pod["metadata"]["uid"], (pod.get("status") or {}).get("phase")
            seen.add(pod_uid)
            if phase not in ("Succeeded", "Failed") or pod_uid in counted:
                continue
            counted.add(pod_uid)
            if phase == "Succeeded":
                succeeded += 1
                continue
            action = _policy_action(job, pod)
            if action is not None and action[0] == "Ignore":
                continue
            failed += 1
            if action is not None and action[0] == "FailJob" and verdict is None:
                verdict = ("PodFailurePolicy", action[1])
        present = {p["metadata"]["uid"] for p in pods}
        for vanished in seen - present - counted:
            counted.add(vanished)
            failed += 1
        status = job.get("status") or {}
        succeeded += int(status.get("succeeded", 0))
        failed += int(status.get("failed", 0))
        start = status.get("startTime") or format_time(now)
        deadline_at = None
        if spec.get("activeDeadlineSeconds") is not None:
            deadline_at = parse_time(start) + int(spec["activeDeadlineSeconds"])
        if verdict is None and failed > int(spec.get("backoffLimit", 6)):
            verdict = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        if verdict is None and deadline_at is not None and now >= deadline_at:
            verdict = ("DeadlineExceeded", "Job was active longer than specified deadline")
        active = [p for p in pods if pod_is_active(p)]
        complete = verdict is None and succeeded >= int(spec.get("completions", 1))
        if verdict is not None or complete:
            for pod in active:
                self._delete_pod(pod)
            active = []
        else:
            wanted = min(int(spec.get("parallelism", 1)),
                         int(spec.get("completions", 1)) - succeeded)
            for _ in range(wanted - len(active)):
                self._create_pod(job)

        def write(obj: Obj) -> None:
            st = obj.setdefault("status", {})
            st.update(startTime=start, active=len(active),
                      ready=sum(1 for p in active if pod_is_ready(p)),
                      succeeded=succeeded, failed=failed,
                      terminating=sum(1 for p in pods if p["metadata"].get("deletionTimestamp")))
            if verdict is not None:
                set_condition(st, "FailureTarget", True, verdict[0], verdict[1])
                set_condition(st, "Failed", True, verdict[0], verdict[1])
            elif complete:
                set_condition(st, "SuccessCriteriaMet", True, "CompletionsReached",
                              "Reached expected number of succeeded pods")
                set_condition(st, "Complete", True, "CompletionsReached",
                              "Reached expected number of succeeded pods")
                st["completionTime"] = format_time(now)
        self.cluster.mutate(JOBS, namespace, meta["name"], write)
        if verdict is not None or complete:
            return now  # come back at once for the TTL
        return deadline_at

    def _expire(self, job: Obj, finished: Obj, now: float) -> float | None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        due = parse_time(str(finished.get("lastTransitionTime"))) + int(ttl)
        if now < due:
            return due
        meta = job["metadata"]
        # The TTL controller deletes in the foreground: the pods go too.
        with contextlib.suppress(ApiError):
            self.cluster.delete(JOBS, meta["namespace"], meta["name"],
                                {"propagationPolicy": "Foreground",
                                 "preconditions": {"uid": meta["uid"]}})
        return None

    def _delete_pod(self, pod: Obj) -> None:
        with contextlib.suppress(ApiError):
            self.cluster.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _create_pod(self, job: Obj) -> None:
        meta = job["metadata"]
        template = json.loads(json.dumps((job.get("spec") or {}).get("template") or {}))
        tmeta = template.get("metadata") or {}
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "generateName": f"{meta['name']}-", "namespace": meta["namespace"],
            "labels": tmeta.get("labels") or {},
            "annotations": {**(tmeta.get("annotations") or {}),
                            "batch.kubernetes.io/job-tracking": ""},
            "ownerReferences": [owner_reference(JOBS, job)]},
            "spec": template.get("spec") or {}}
        try:
            self.cluster.create_internal(PODS, pod)
        except ApiError as error:
            logger.warning("kubesim: job %s could not create a pod: %s", meta["name"],
                           error.body.get("message"))
