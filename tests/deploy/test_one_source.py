"""One source for sandbox pods: the Kubernetes backend and kustomize build them from
the same ``manifests/sandbox-pod.yaml``, with the same settings.

- ``manifests/pools/`` is exactly what ``scripts/render_pools.py`` renders now;
- each pool file is exactly ``PodTemplates(...).pool_deployment(...)`` of the code;
- in every built overlay, each pool's pod template is the one the backend would
  create with that overlay's ConfigMap, its size is that overlay's POD_POOL_<LANG>,
  and every pooled language has its pool;
- the Jobs the code builds from the same template are valid, and the real apiserver
  admits them and their pods, created by the API's ServiceAccount in a namespace
  enforcing Pod Security "restricted".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from app.backends.kubernetes.templates import (
    ANNOTATION_LAST_CLAIM,
    ANNOTATION_MANAGED,
    ANNOTATION_TARGET,
    ANNOTATION_TEMPLATE,
    IMAGE_GROUPS,
    MANAGED_BY_API,
    TEMPLATE_PATH,
    PodTemplates,
)
from app.settings import KubernetesSettings, Settings
from sidecar.languages import LANGUAGES
from tests.cluster import Namespace

from .admission import (
    POD_SECURITY_REFUSAL,
    as_pod,
    create_pod,
    pod_security_warnings,
    privileged,
    status_message,
)
from .kube import REPO, SCHEMA_VERSIONS, Obj, config_data, label, pools, schema_errors

POOLS = REPO / "manifests" / "pools"
CONFIG_ENV = REPO / "kustomize" / "base" / "config.env"
SCRIPT = REPO / "scripts" / "render_pools.py"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value for key, value in pairs}


def _code_pool(settings: Settings, lang: str) -> Obj:
    size = settings.pool_size(lang)
    deployment = PodTemplates(settings.kubernetes).pool_deployment(lang, size, size)
    deployment["metadata"]["annotations"].pop(ANNOTATION_LAST_CLAIM)
    # Applied by kustomize, a pool is kustomize's: marked so, its template the API leaves.
    annotations = deployment["metadata"]["annotations"]
    assert annotations.pop(ANNOTATION_MANAGED) == MANAGED_BY_API
    annotations.pop(ANNOTATION_TEMPLATE)
    annotations[ANNOTATION_MANAGED] = "kustomize"
    return deployment


def test_code_and_kustomize_read_the_same_template_file() -> None:
    assert TEMPLATE_PATH == REPO / "manifests" / "sandbox-pod.yaml"
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert "pools" in kustomization["resources"]
    assert "sandbox-pod.yaml" not in kustomization["resources"], "a template, not an object"


def test_checked_in_pools_are_what_the_script_renders_now() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                          text=True, timeout=60, check=False, cwd=REPO)
    assert done.returncode == 0, f"stale pools, run scripts/render_pools.py:\n{done.stdout}"


def test_each_pool_file_equals_the_backends_deployment() -> None:
    settings = Settings.from_env(_env_file(CONFIG_ENV))
    pooled = {lang for lang in LANGUAGES if settings.pool_size(lang) > 0}
    assert pooled, "the base configuration pools at least one language"
    files = {p.stem: yaml.safe_load(p.read_text()) for p in POOLS.glob("*.yaml")
             if p.name != "kustomization.yaml"}
    assert set(files) == pooled
    for lang, checked_in in files.items():
        assert checked_in == _code_pool(settings, lang), f"manifests/pools/{lang}.yaml drifted"
    kustomization = yaml.safe_load((POOLS / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == settings.kubernetes.namespace
    assert sorted(kustomization["resources"]) == sorted(f"{lang}.yaml" for lang in pooled)


def test_the_script_renders_from_the_code_for_any_configuration(tmp_path: Path) -> None:
    """Not a copy: other sizes and resources in config.env give other files."""
    config = tmp_path / "config.env"
    config.write_text("K8S_NAMESPACE=elsewhere\nPOD_POOL_PY=0\nPOD_POOL_GO=3\n"
                      "K8S_CPU_LIMIT=3\n")
    out = tmp_path / "pools"
    done = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "--out",
                           str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.yaml")) == ["go.yaml", "kustomization.yaml"]
    settings = Settings.from_env(_env_file(config))
    assert yaml.safe_load((out / "go.yaml").read_text()) == _code_pool(settings, "go")
    assert yaml.safe_load((out / "kustomization.yaml").read_text())["namespace"] == "elsewhere"


def test_every_overlays_pools_are_the_backends_pods(overlay: list[Obj]) -> None:
    settings = Settings.from_env(config_data(overlay))
    built_pools = {d["metadata"]["name"]: d for d in pools(overlay)}
    pooled = {lang for lang in LANGUAGES if settings.pool_size(lang) > 0}
    assert set(built_pools) == {f"k8si-pool-{lang}" for lang in pooled}
    for lang in pooled:
        built, code = built_pools[f"k8si-pool-{lang}"], _code_pool(settings, lang)
        where = label(built)
        assert built["metadata"]["namespace"] == settings.kubernetes.namespace, where
        assert built["spec"]["template"] == code["spec"]["template"], f"{where}: pod drifted"
        assert built["spec"]["selector"] == code["spec"]["selector"], where
        assert built["metadata"]["labels"] == code["metadata"]["labels"], where
        size = str(settings.pool_size(lang))
        assert str(built["spec"]["replicas"]) == size, f"{where}: replicas vs POD_POOL"
        assert built["metadata"]["annotations"][ANNOTATION_TARGET] == size, where
        image = settings.kubernetes.image_template.format(group=IMAGE_GROUPS[lang], lang=lang)
        assert built["spec"]["template"]["spec"]["containers"][0]["image"] == image


def _code_jobs() -> list[Obj]:
    templates = PodTemplates(KubernetesSettings())
    jobs = []
    for lang in LANGUAGES:
        job = templates.job(f"k8si-{lang}-0123abcd", lang,
                            {"k8si.io/session": "s0123x", "k8si.io/tenant": "tdefaultx"},
                            {"k8si.io/expires-at": "1.0"})
        job["metadata"]["namespace"] = "k8si-sandbox"
        jobs.append(job)
    return jobs


def test_jobs_from_the_template_are_valid() -> None:
    for job in _code_jobs():
        assert not schema_errors(job, (SCHEMA_VERSIONS[-1],))
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_jobs_from_the_template_pass_restricted_as_the_api_creates_them(
        kube: Namespace) -> None:
    """Every language's Job, and the pod its controller would make from it, created
    (dry run) by the API's ServiceAccount in a namespace enforcing "restricted":
    accepted by the real apiserver, with no PodSecurity warning."""
    headers = {"Authorization": f"Bearer {kube.cluster.api_token}"}
    for job in _code_jobs():
        job["metadata"]["namespace"] = kube.namespace
        name = job["metadata"]["name"]
        created = kube.cluster.admin.post(kube.path("jobs"), json=job, headers=headers,
                                          params={"dryRun": "All"})
        assert created.status_code == 201, f"{name}: {created.text}"
        assert not pod_security_warnings(created), f"{name}: {pod_security_warnings(created)}"
        template = job["spec"]["template"]
        pod = create_pod(kube.cluster, kube.namespace, as_pod(job, template["metadata"],
                                                              template["spec"]), as_api=True)
        assert pod.status_code == 201, f"{name}: {status_message(pod)}"
        refused = create_pod(kube.cluster, kube.namespace, privileged(as_pod(
            job, template["metadata"], template["spec"])), as_api=True)
        assert refused.status_code == 403, f"{name}: {refused.text}"
        assert POD_SECURITY_REFUSAL in status_message(refused)
    assert not kube.objects("jobs") and not kube.objects("pods"), "dry runs store nothing"


def test_jobs_from_the_template_are_valid_on_older_clusters() -> None:
    errors = [e for job in _code_jobs() for e in schema_errors(job, SCHEMA_VERSIONS[:1])]
    assert not errors, errors[:1]
