"""Tests of the deployment: runtime images (static), manifests, kustomize overlays, and
the overlays meeting a real apiserver's admission (tests/cluster's control plane)."""
