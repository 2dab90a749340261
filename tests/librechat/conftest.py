"""Fixtures of the client tests: the installed package and a way to run its scripts."""

from __future__ import annotations

import pytest

from .client import LibreChatClient, install_client


@pytest.fixture(scope="session")
def librechat() -> LibreChatClient:
    """The pinned ``@librechat/agents``, installed once per lock file."""
    return LibreChatClient(install_client())
