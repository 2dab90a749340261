"""Settings from the environment: defaults, parsing, and clear errors."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir.name == ".k8si" and settings.data_dir.is_absolute()
    assert settings.valkey_url is None
    assert settings.pool_size("py") == 2 and settings.pool_size("java") == 0
    assert settings.runtime_dir == settings.data_dir / "runtime"
    assert settings.sandbox_prefault is True


def test_environment_values() -> None:
    settings = Settings.from_env({
        "HOST": "0.0.0.0", "PORT": "9000", "API_KEYS": "a, b,,c", "POD_POOL_PY": "5",
        "POD_POOL_JAVA": "1", "POD_POOL_ENABLED": "false", "MAX_EXECUTION_TIME": "120",
        "VALKEY_URL": "valkey://v:6379/0", "RUNTIME_DIR": "/opt/rt",
        "SANDBOX_PREFAULT": "false"})
    assert settings.api_keys == ("a", "b", "c")
    assert settings.port == 9000 and settings.max_execution_time == 120
    assert settings.pool_sizes["java"] == 1
    assert settings.pool_size("py") == 0  # pools disabled
    assert str(settings.runtime_dir) == "/opt/rt"
    assert settings.sandbox_prefault is False


@pytest.mark.parametrize("env", [{"PORT": "eighty"}, {"PORT": "0"}, {"POD_POOL_PY": "-1"},
                                 {"POD_POOL_ENABLED": "maybe"}, {"MAX_MEMORY_MB": "8"},
                                 {"SANDBOX_PREFAULT": "sometimes"},
                                 {"EXECUTION_BACKEND": "docker"},
                                 {"DEFAULT_EXECUTION_TIME": "90", "MAX_EXECUTION_TIME": "60"}])
def test_bad_values_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert next(iter(env)) in str(info.value) or "EXECUTION" in str(info.value)
