"""Runtime and API images, checked statically (no container engine runs here).

Each sandbox image: a pinned base, the executor copied in and run as PID 1 exactly
as the pod template runs it, uid 65532, /mnt/data, its group's toolchains checked
at build time, setuid/setgid bits and file capabilities stripped last. The API
image: Python 3.11 slim, non-root, ``k8si serve --host 0.0.0.0``, with
manifests/sandbox-pod.yaml where the backend's TEMPLATE_PATH looks for it. The bake
file builds all of them under the names the backend uses.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from app.backends.kubernetes import templates as templates_module
from app.backends.kubernetes.templates import IMAGE_GROUPS, TEMPLATE_PATH
from app.settings import KubernetesSettings
from sidecar.languages import LANGUAGES

from .dockerfiles import BakeFile, Stage, parse_bake, parse_dockerfile
from .kube import PINNED_IMAGE, REPO

IMAGES = REPO / "runtime-images"
GROUPS = sorted(set(IMAGE_GROUPS.values()))
TEMPLATE = yaml.safe_load(TEMPLATE_PATH.read_text())
EXECUTOR = TEMPLATE["spec"]["containers"][0]
DATA_STACK = ("numpy", "pandas", "matplotlib", "cloudpickle", "lz4")


def _final(path: Path) -> Stage:
    return parse_dockerfile(path)[-1]


def _bake() -> BakeFile:
    return parse_bake(IMAGES / "docker-bake.hcl")


def _run_text(stage: Stage) -> str:
    return "\n".join(i.args for i in stage.all("RUN"))


def _langs(group: str) -> set[str]:
    return {lang for lang, g in IMAGE_GROUPS.items() if g == group}


def test_every_language_has_an_image_group_with_a_dockerfile() -> None:
    assert set(IMAGE_GROUPS) == set(LANGUAGES)
    for group in GROUPS:
        assert (IMAGES / group / "Dockerfile").is_file(), group
    assert (IMAGES / "api" / "Dockerfile").is_file()


def test_bake_builds_every_image_under_the_names_the_backend_uses() -> None:
    bake = _bake()
    default = KubernetesSettings()
    everything = {t for g in bake.groups["default"] for t in bake.groups.get(g, [g])}
    assert everything == {"api", *(f"runtime-{g}" for g in GROUPS)}
    for group in GROUPS:
        target = bake.resolve(f"runtime-{group}")
        assert target["dockerfile"] == f"{group}/Dockerfile"
        assert target["context"] == "runtime-images"
        assert target["contexts"] == {"sidecar": "sidecar"}
        tags = [bake.interpolate(t) for t in target["tags"]]  # type: ignore[attr-defined]
        assert tags == [default.image_template.format(group=group, lang="")]
    api = bake.resolve("api")
    assert api["context"] == "." and api["dockerfile"] == "runtime-images/api/Dockerfile"
    api_tags = [bake.interpolate(t) for t in api["tags"]]  # type: ignore[attr-defined]
    deployment = (REPO / "kustomize/components/api-deployment/deployment.yaml").read_text()
    assert f"image: {api_tags[0]}" in deployment


def test_base_images_are_pinned_never_latest() -> None:
    bake = _bake()
    for name, value in bake.variables.items():
        if name.endswith("_BASE"):
            assert PINNED_IMAGE.match(value) and ":latest" not in value, f"{name}={value}"
    dockerfiles = sorted(IMAGES.glob("*/Dockerfile"))
    assert len(dockerfiles) == len(GROUPS) + 1
    for path in dockerfiles:
        for stage in parse_dockerfile(path):
            assert PINNED_IMAGE.match(stage.base), f"{path}: FROM {stage.base}"
        for target in bake.targets.values():
            if str(target.get("dockerfile", "")).endswith(f"{path.parent.name}/Dockerfile"):
                base = bake.variables[target["args"]["BASE_IMAGE"]]  # type: ignore[index]
                assert base == parse_dockerfile(path)[0].base, f"{path}: bake and ARG differ"
    assert "latest" not in (IMAGES / "docker-bake.hcl").read_text().replace("# ", "")


@pytest.mark.parametrize("group", GROUPS)
def test_runtime_image_runs_the_executor_as_the_pod_template_does(group: str) -> None:
    stage = _final(IMAGES / group / "Dockerfile")
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.exec_form() == EXECUTOR["command"], "exec form: the executor is PID 1"
    args = cmd.exec_form()
    assert args is not None and args[args.index("--lang") + 1] in _langs(group)
    assert args[args.index("--workdir") + 1] == "/mnt/data"
    user = stage.last("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    assert uid == str(TEMPLATE["spec"]["securityContext"]["runAsUser"])
    assert gid in ("", str(TEMPLATE["spec"]["securityContext"]["runAsGroup"]))
    workdir = stage.last("WORKDIR")
    assert workdir is not None and workdir.args == "/mnt/data"
    assert "/mnt/data" in {m["mountPath"] for m in EXECUTOR["volumeMounts"]}
    pythonpath = next(e["value"] for e in EXECUTOR["env"] if e["name"] == "PYTHONPATH")
    assert f"PYTHONPATH={pythonpath}" in {i.args for i in stage.all("ENV")}
    copies = [i for i in stage.all("COPY") if i.flags.get("from") == "sidecar"]
    assert [c.args for c in copies] == [f". {pythonpath}/sidecar"]
    expose = stage.last("EXPOSE")
    assert expose is not None and expose.args == str(KubernetesSettings().executor_port)


@pytest.mark.parametrize("group", GROUPS)
def test_runtime_image_checks_its_toolchains_and_strips_privileges_last(group: str) -> None:
    stage = _final(IMAGES / group / "Dockerfile")
    index = {id(i): n for n, i in enumerate(stage.instructions)}
    finish = [i for i in stage.all("RUN") if "finish-sandbox.sh" in i.args]
    assert len(finish) == 1, "the shared last step (runtime-images/finish-sandbox.sh)"
    checked = re.search(r"finish-sandbox\.sh ([a-z0-9 ]+)", finish[0].args)
    assert checked, "the build proves each language runs with the executor's environment"
    assert set(checked.group(1).split()) == _langs(group)
    after = stage.instructions[index[id(finish[0])] + 1:]
    assert not [i for i in after if i.keyword in ("RUN", "COPY", "ADD")], \
        "nothing may add files after the privileges are stripped"
    copied = [i.args for i in stage.all("COPY") if "finish-sandbox.sh" in i.args]
    assert copied and "harden.py" in copied[0] and "check-toolchains.py" in copied[0]


def test_the_shared_last_step_makes_the_user_checks_then_hardens() -> None:
    """Written once for every sandbox image: the order of its steps is the contract."""
    lines = [line.strip() for line in (IMAGES / "finish-sandbox.sh").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    text = "\n".join(lines)
    assert lines[0] == "set -eux"
    assert "--uid 65532 --gid 65532" in text and "install -d -o 65532 -g 65532" in text
    order = [text.index(step) for step in (
        "useradd", "compileall", 'check-toolchains.py "$@"', "harden.py /",
        "rm -rf /opt/k8si/build")]
    assert order == sorted(order)
    assert lines[-1].startswith("rm -rf /opt/k8si/build")


def test_python_image_carries_the_pinned_data_stack() -> None:
    pins = dict(line.split("==") for line in (IMAGES / "python/requirements.txt")
                .read_text().splitlines() if line and not line.startswith("#"))
    assert set(pins) == set(DATA_STACK)
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values())
    runs = _run_text(_final(IMAGES / "python" / "Dockerfile"))
    assert "requirements.txt" in runs
    for module in DATA_STACK:
        assert re.search(rf"--import {module}\b", runs), f"{module} is imported at build time"


def test_api_image_serves_as_non_root() -> None:
    stages = parse_dockerfile(IMAGES / "api" / "Dockerfile")
    assert all(re.match(r"python:3\.11\.\d+-slim", s.base) for s in stages)
    final = stages[-1]
    entrypoint, cmd, user = final.last("ENTRYPOINT"), final.last("CMD"), final.last("USER")
    assert entrypoint is not None and cmd is not None and user is not None
    assert (entrypoint.exec_form() or []) + (cmd.exec_form() or []) == [
        "k8si", "serve", "--host", "0.0.0.0"]
    assert user.args.split(":")[0] not in ("0", "root", "")
    assert "harden.py /" in _run_text(final)


def test_api_image_layout_matches_template_path() -> None:
    """The editable install keeps modules at <workdir>/app/..., so TEMPLATE_PATH (relative
    to templates.py) must land on a copy of manifests/sandbox-pod.yaml in the image."""
    build, final = parse_dockerfile(IMAGES / "api" / "Dockerfile")
    workdir = build.last("WORKDIR")
    assert workdir is not None
    install = re.search(r"pip install -e (\S+)", _run_text(build))
    assert install and install.group(1).rstrip(";") == ".", "editable install of the project"
    copied: dict[str, PurePosixPath] = {}
    for copy in build.all("COPY"):
        *sources, dest = copy.words()
        for source in sources:
            copied[source.rstrip("/")] = PurePosixPath(workdir.args, dest.rstrip("/"))
    local = Path(templates_module.__file__).resolve()
    module = local.relative_to(REPO)
    in_image = copied[module.parts[0]].joinpath(*module.parts[1:])
    # How TEMPLATE_PATH is derived from templates.py (parents[k] / rest), applied in-image.
    k = next(n for n, parent in enumerate(local.parents) if TEMPLATE_PATH.is_relative_to(parent))
    template_in_image = in_image.parents[k] / TEMPLATE_PATH.relative_to(local.parents[k]).as_posix()
    manifests = copied[TEMPLATE_PATH.relative_to(REPO).parts[0]]
    assert template_in_image == manifests / TEMPLATE_PATH.name, (template_in_image, manifests)
    final_copies = {(i.flags.get("from"), i.args) for i in final.all("COPY")}
    assert ("build", f"{workdir.args} {workdir.args}") in final_copies
    ignore = (IMAGES / "api" / "Dockerfile.dockerignore").read_text().splitlines()
    for source in (*copied, "runtime-images/harden.py"):
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is in the context"
