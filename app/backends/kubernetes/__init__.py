"""The Kubernetes backend: warm pools claimed by label patch, Jobs for the cold path."""

from .backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
