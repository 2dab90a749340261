"""Tests of the deployment: runtime images (static), manifests, kustomize overlays."""
