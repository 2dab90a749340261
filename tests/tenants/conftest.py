"""Fixtures of the tenant tests: an async Valkey client, and a tenant of the test's own."""

from __future__ import annotations

import secrets

import pytest
import valkey.asyncio as valkey


@pytest.fixture
def client(valkey_url: str) -> valkey.Valkey:
    """The tests' Valkey (async; used through the ``run`` fixture's loop)."""
    connection: valkey.Valkey = valkey.Valkey.from_url(valkey_url)
    return connection


@pytest.fixture
def tenant() -> str:
    return f"t{secrets.token_hex(4)}"
