"""Fixtures: every kustomize overlay built once per session, offline; and, for the
tests that meet real admission, the session's real control plane (``tests/cluster``)
with the Knative Serving CRDs installed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster import KubeCluster

from .admission import install_knative_crds
from .kube import OVERLAYS, Obj, build, scratch_tree

__all__ = ["built", "knative_crds", "overlay", "scratch"]


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of kustomize/ and manifests/ with secrets.env from the examples."""
    return scratch_tree(tmp_path_factory.mktemp("kustomize"))


@pytest.fixture(scope="session")
def built(scratch: Path) -> dict[str, list[Obj]]:
    """Overlay name -> its objects (``kubectl kustomize kustomize/overlays/<name>``)."""
    return {name: build(scratch / "kustomize" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, built: dict[str, list[Obj]]) -> list[Obj]:
    """The objects of one overlay (the test runs once per overlay)."""
    objects: list[Obj] = built[request.param]
    return objects


@pytest.fixture(scope="session")
def knative_crds(kube_cluster: KubeCluster) -> list[str]:
    """Knative Serving's CRDs (from the knative.dev/serving Go module), Established."""
    return install_knative_crds(kube_cluster)
