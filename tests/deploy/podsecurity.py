"""A Pod Security Standards "restricted" check, written from the standard's field list.

``restricted_violations(metadata, spec)`` returns one line per violated control for
a pod (its metadata and spec, as in a pod template), following
https://kubernetes.io/docs/concepts/security/pod-security-standards/ — the baseline
controls (host namespaces, privileged, capabilities, hostPath, host ports, AppArmor,
SELinux, /proc mount, seccomp, sysctls) and the restricted ones (volume types,
privilege escalation, non-root, non-zero uid, seccomp, capabilities). Containers
means all of ``containers``, ``initContainers`` and ``ephemeralContainers``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["restricted_violations"]

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
RESTRICTED_ADD = frozenset({"NET_BIND_SERVICE"})
RESTRICTED_VOLUMES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or []]


def _baseline_pod(metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    found = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"host namespaces: spec.{field} is true")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        found.append("HostProcess: spec.securityContext.windowsOptions.hostProcess")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"hostPath volume {volume.get('name')!r}")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
                value == "runtime/default" or value.startswith("localhost/")):
            found.append(f"AppArmor annotation {key}={value}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"unsafe sysctl {sysctl.get('name')}")
    found += _context_violations("spec.securityContext", pod_sc)
    return found


def _context_violations(where: str, context: dict[str, Any]) -> list[str]:
    """Controls that apply alike to the pod's and to a container's securityContext."""
    found = []
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        found.append(f"AppArmor: {where}.appArmorProfile.type={apparmor}")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES:
        found.append(f"SELinux: {where}.seLinuxOptions.type={selinux.get('type')}")
    for field in ("user", "role"):
        if selinux.get(field):
            found.append(f"SELinux: {where}.seLinuxOptions.{field} is set")
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_ALLOWED:
        found.append(f"seccomp: {where}.seccompProfile.type={seccomp}")
    if context.get("runAsUser") == 0:
        found.append(f"runAsUser: {where}.runAsUser is 0")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"HostProcess: {where}.windowsOptions.hostProcess")
    return found


def _container_violations(spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
    name = container.get("name", "?")
    where = f"container {name!r} securityContext"
    context = container.get("securityContext") or {}
    pod_sc = spec.get("securityContext") or {}
    found = _context_violations(where, context)
    if context.get("privileged"):
        found.append(f"privileged: {where}.privileged is true")
    if context.get("procMount", "Default") != "Default":
        found.append(f"/proc mount: {where}.procMount={context.get('procMount')}")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            found.append(f"host port {port['hostPort']} in container {name!r}")
    capabilities = context.get("capabilities") or {}
    added = set(capabilities.get("add") or [])
    if added - BASELINE_CAPABILITIES:
        found.append(f"capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)}")
    if added - RESTRICTED_ADD:
        found.append(f"capabilities: {where} may add only NET_BIND_SERVICE, adds {sorted(added)}")
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"capabilities: {where}.capabilities.drop lacks ALL")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append(f"privilege escalation: {where}.allowPrivilegeEscalation is not false")
    non_root = context.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        found.append(f"non-root: neither {where} nor the pod sets runAsNonRoot: true")
    seccomp = (context.get("seccompProfile") or {}).get("type") or (
        pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in SECCOMP_ALLOWED:
        found.append(f"seccomp: neither {where} nor the pod sets RuntimeDefault/Localhost")
    return found


def restricted_violations(metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Every way this pod fails Pod Security "restricted" (empty: it passes)."""
    found = _baseline_pod(metadata, spec)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds or not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')!r} of type {sorted(kinds)} is not allowed")
    containers = _containers(spec)
    if not containers:
        found.append("the pod has no containers")
    for container in containers:
        found += _container_violations(spec, container)
    return found
