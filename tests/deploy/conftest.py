"""Fixtures: every kustomize overlay built once per session, offline."""

from __future__ import annotations

import pytest

from .kube import OVERLAYS, Obj, build, scratch_tree


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Overlay name -> its objects (``kubectl kustomize kustomize/overlays/<name>``)."""
    root = scratch_tree(tmp_path_factory.mktemp("kustomize"))
    return {name: build(root / "kustomize" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, built: dict[str, list[Obj]]) -> list[Obj]:
    """The objects of one overlay (the test runs once per overlay)."""
    objects: list[Obj] = built[request.param]
    return objects
