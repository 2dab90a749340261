"""The local backend: nsjail namespace sandboxes on this machine (the embedded default)."""

from .backend import LocalBackend

__all__ = ["LocalBackend"]
