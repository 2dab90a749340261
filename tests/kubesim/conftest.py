"""The emulator's fixtures, for its conformance tests."""

from tests.kubesim.fixtures import fake_kubesim, kubesim

__all__ = ["fake_kubesim", "kubesim"]
