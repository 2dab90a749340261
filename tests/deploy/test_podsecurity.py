"""The "restricted" checker itself: it accepts a compliant pod and catches each control."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from .podsecurity import restricted_violations

Spec = dict[str, Any]


def _good() -> Spec:
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "c", "image": "x:1",
            "securityContext": {"allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "ports": [{"containerPort": 8080}]}],
        "volumes": [{"name": "w", "emptyDir": {}}, {"name": "p", "projected": {"sources": []}}],
    }


def _container(spec: Spec) -> Spec:
    found: Spec = spec["containers"][0]["securityContext"]
    return found


MUTATIONS: dict[str, Callable[[Spec], None]] = {
    "hostNetwork": lambda s: s.update(hostNetwork=True),
    "hostPID": lambda s: s.update(hostPID=True),
    "hostIPC": lambda s: s.update(hostIPC=True),
    "privileged": lambda s: _container(s).update(privileged=True),
    "hostPath": lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "hostPort": lambda s: s["containers"][0]["ports"][0].update(hostPort=80),
    "volume type": lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x"}}),
    "escalation unset": lambda s: _container(s).pop("allowPrivilegeEscalation"),
    "escalation true": lambda s: _container(s).update(allowPrivilegeEscalation=True),
    "non-root unset": lambda s: s["securityContext"].pop("runAsNonRoot"),
    "non-root overridden": lambda s: _container(s).update(runAsNonRoot=False),
    "uid 0 in pod": lambda s: s["securityContext"].update(runAsUser=0),
    "uid 0 in container": lambda s: _container(s).update(runAsUser=0),
    "seccomp unset": lambda s: s["securityContext"].pop("seccompProfile"),
    "seccomp unconfined": lambda s: _container(s).update(seccompProfile={"type": "Unconfined"}),
    "capabilities not dropped": lambda s: _container(s).pop("capabilities"),
    "capability added": lambda s: _container(s)["capabilities"].update(add=["SYS_ADMIN"]),
    "baseline capability added": lambda s: _container(s)["capabilities"].update(add=["CHOWN"]),
    "procMount": lambda s: _container(s).update(procMount="Unmasked"),
    "selinux type": lambda s: _container(s).update(seLinuxOptions={"type": "spc_t"}),
    "sysctl": lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax",
                                                              "value": "1"}]),
    "apparmor": lambda s: _container(s).update(appArmorProfile={"type": "Unconfined"}),
    "init container": lambda s: s.update(initContainers=[{"name": "i", "image": "x:1"}]),
}


def test_a_compliant_pod_passes() -> None:
    assert restricted_violations({}, _good()) == []
    allowed = _good()
    _container(allowed)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    allowed["securityContext"] = {"seccompProfile": {"type": "Localhost",
                                                     "localhostProfile": "p.json"}}
    _container(allowed).update(runAsNonRoot=True)
    assert restricted_violations({}, allowed) == []


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_control_is_enforced(name: str) -> None:
    spec = copy.deepcopy(_good())
    MUTATIONS[name](spec)
    assert restricted_violations({}, spec), f"{name} was not caught"


def test_apparmor_annotation_is_checked() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/c"
    assert restricted_violations({"annotations": {key: "unconfined"}}, _good())
    assert not restricted_violations({"annotations": {key: "runtime/default"}}, _good())
