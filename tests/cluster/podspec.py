"""What the kubelet reads from a pod spec to start its executor.

The executor container is the first one whose command or args carry ``--lang``
(else the first container). From it: the language (``--lang py`` or
``--lang=py``), the port (``--tcp HOST:PORT``, else the first ``containerPort``,
else 8080), the user environment (``--env KEY=VALUE`` args, with ``$(VAR)``
expanded from the container's ``env`` like the kubelet does, including
``fieldRef`` ``metadata.name``/``metadata.namespace``/``metadata.uid``/
``spec.nodeName``/``status.podIP``), and sandbox sizes: ``--memory-mb`` (else
``resources.limits.memory``), ``--max-output-bytes``, ``--compile-timeout``,
``--preload``, and the ``emptyDir.sizeLimit`` of the volumes mounted at the work
dir (``--workdir``, default ``/mnt/data``) and ``/tmp``.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["ExecutorSpec", "PodSpecError", "check_runnable", "executor_spec", "parse_quantity"]

Obj = dict[str, Any]
_UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "k": 1000,
          "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4, "": 1}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T|)$")


class PodSpecError(Exception):
    """The pod cannot run an executor (no ``--lang``, unknown flags' values)."""


def parse_quantity(text: Any) -> int | None:
    """Bytes of a resource quantity (``256Mi``, ``1G``, ``1048576``), None if unparseable."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@attrs.frozen
class ExecutorSpec:
    container: str
    image: str
    language: str
    port: int
    env: dict[str, str]
    memory_bytes: int | None = None
    workdir_bytes: int | None = None
    tmp_bytes: int | None = None
    max_output_bytes: int | None = None
    compile_timeout: int | None = None
    preload: tuple[str, ...] | None = None


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def _flags(argv: list[str], name: str) -> list[str]:
    found = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith(name + "="):
            found.append(arg[len(name) + 1:])
    return found


def _container_env(pod: Obj, container: Obj) -> dict[str, str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    fields = {"metadata.name": meta.get("name", ""),
              "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""),
              "spec.nodeName": (pod.get("spec") or {}).get("nodeName", ""),
              "status.podIP": status.get("podIP", "")}
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
        else:
            path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if path in fields:
                env[item["name"]] = str(fields[path])
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion (``$$`` escapes; unknown names stay as they are)."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def _int(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError as exc:
        raise PodSpecError(f"{flag} expects a number, got {value!r}") from exc


def executor_spec(pod: Obj) -> ExecutorSpec:
    """Read the executor's settings from ``pod`` (with its podIP already assigned)."""
    spec = pod.get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    if not containers:
        raise PodSpecError("the pod has no containers")
    container = next((c for c in containers
                      if "--lang" in " ".join(map(str, [*(c.get("command") or []),
                                                        *(c.get("args") or [])]))),
                     containers[0])
    env = _container_env(pod, container)
    argv = [_expand(str(a), env) for a in [*(container.get("command") or []),
                                           *(container.get("args") or [])]]
    language = _flag(argv, "--lang")
    if not language:
        raise PodSpecError(f"container {container.get('name')!r} has no --lang argument")
    port = None
    if (tcp := _flag(argv, "--tcp")) is not None:
        port = _int(tcp.rpartition(":")[2], "--tcp")
    if port is None:
        ports = container.get("ports") or []
        port = int(ports[0].get("containerPort", 8080)) if ports else 8080
    user_env = {}
    for item in _flags(argv, "--env"):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PodSpecError(f"--env expects KEY=VALUE, got {item!r}")
        user_env[key] = value
    memory_mb = _int(_flag(argv, "--memory-mb"), "--memory-mb")
    limit = parse_quantity(((container.get("resources") or {}).get("limits") or {})
                           .get("memory", ""))
    sizes = _volume_sizes(spec, container, _flag(argv, "--workdir") or "/mnt/data")
    preload = _flag(argv, "--preload")
    return ExecutorSpec(
        container=str(container.get("name", "executor")), image=str(container.get("image", "")),
        language=language, port=port, env=user_env,
        memory_bytes=memory_mb * 1024 * 1024 if memory_mb else limit,
        workdir_bytes=sizes.get("work"), tmp_bytes=sizes.get("tmp"),
        max_output_bytes=_int(_flag(argv, "--max-output-bytes"), "--max-output-bytes"),
        compile_timeout=_int(_flag(argv, "--compile-timeout"), "--compile-timeout"),
        preload=None if preload is None else tuple(m for m in preload.split(",") if m))


def _volume_sizes(spec: Obj, container: Obj, workdir: str) -> dict[str, int]:
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    sizes: dict[str, int] = {}
    for mount in container.get("volumeMounts") or []:
        where = {workdir: "work", "/tmp": "tmp"}.get(str(mount.get("mountPath")))
        volume = volumes.get(mount.get("name")) or {}
        size = parse_quantity((volume.get("emptyDir") or {}).get("sizeLimit", ""))
        if where is not None and size:
            sizes[where] = size
    return sizes


def check_runnable(pod: Obj) -> None:
    """Raise ``PodSpecError`` for what the node agent cannot honestly run."""
    spec = pod.get("spec") or {}
    if spec.get("initContainers") or spec.get("ephemeralContainers"):
        raise PodSpecError("init and ephemeral containers are not supported by the node agent")
    if len(spec.get("containers") or []) != 1:
        raise PodSpecError("the node agent runs exactly one container per pod")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds != {"emptyDir"}:
            raise PodSpecError(f"volume {volume.get('name')!r} is {', '.join(sorted(kinds))}: "
                             "the node agent mounts only emptyDir volumes")
