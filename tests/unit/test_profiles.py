"""Execution profiles: the setting, and the choice made from the request's header."""

from __future__ import annotations

import pytest

from app.errors import InvalidExecutionProfile, ProfileMismatch
from app.profiles import choose_profile, is_exec_route
from app.settings import Settings, SettingsError


def test_the_default_setting_serves_both_on_the_local_backend() -> None:
    assert Settings.from_env({}).execution_profiles == ("default", "stateful")
    assert Settings.from_env({"EXECUTION_PROFILES": " "}).execution_profiles == (
        "default", "stateful")
    assert Settings.from_env({"EXECUTION_PROFILES": "default"}).execution_profiles == (
        "default",)
    assert Settings().execution_profiles == ("default",)  # built by hand: as given
    assert Settings.from_env({"EXECUTION_PROFILES": " Default, default "}
                             ).execution_profiles == ("default",)


@pytest.mark.parametrize(("raw", "message"), [
    ("default,aws", "'aws' is not a profile"),
    (",", "at least one"),
])
def test_profiles_that_cannot_be_served_stop_start_up(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"EXECUTION_PROFILES": raw})


def test_stateful_is_opt_in_on_kubernetes() -> None:
    assert Settings.from_env({"EXECUTION_PROFILES": "default,stateful"}
                             ).execution_profiles == ("default", "stateful")
    assert Settings.from_env({"EXECUTION_PROFILES": "stateful"}).execution_profiles == (
        "stateful",)
    assert Settings.from_env({"EXECUTION_BACKEND": "kubernetes"}).execution_profiles == (
        "default",)
    assert Settings.from_env({"EXECUTION_BACKEND": "kubernetes",
                              "EXECUTION_PROFILES": "default,stateful"}
                             ).execution_profiles == ("default", "stateful")


def test_the_runtime_session_limits_are_settings() -> None:
    limits = Settings.from_env({}).runtime_sessions
    assert (limits.idle_ttl, limits.max_age, limits.per_tenant, limits.total) == (
        900, 14400, 4, 32)
    limits = Settings.from_env({"RUNTIME_SESSION_IDLE_TTL": "60", "RUNTIME_SESSION_MAX_AGE": "600",
                                "RUNTIME_SESSIONS_PER_TENANT": "1",
                                "RUNTIME_SESSIONS_TOTAL": "2"}).runtime_sessions
    assert (limits.idle_ttl, limits.max_age, limits.per_tenant, limits.total) == (60, 600, 1, 2)
    for name in ("RUNTIME_SESSION_IDLE_TTL", "RUNTIME_SESSIONS_PER_TENANT",
                 "RUNTIME_SESSIONS_TOTAL", "RUNTIME_SESSION_MAX_AGE"):
        with pytest.raises(SettingsError):
            Settings.from_env({name: "0"})


def test_an_empty_profile_list_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least one"):
        Settings(execution_profiles=())


def test_no_header_is_default_and_a_served_profile_is_chosen() -> None:
    assert choose_profile([], ("default",)) == "default"
    assert choose_profile(["default"], ("default",)) == "default"
    assert choose_profile([" default "], ("default",)) == "default"


def test_a_profile_not_served_is_a_mismatch() -> None:
    with pytest.raises(ProfileMismatch) as caught:
        choose_profile(["stateful"], ("default",))
    assert caught.value.status_code == 409
    assert caught.value.code == "execution_profile_mismatch"
    assert caught.value.extra == {"expected_profile": "stateful", "actual_profile": "default",
                                  "available_profiles": ["default"]}


@pytest.mark.parametrize("values", [["aws"], ["Stateful"], [""], ["default", "default"],
                                    ["default", "stateful"]])
def test_malformed_expectations_are_400(values: list[str]) -> None:
    with pytest.raises(InvalidExecutionProfile) as caught:
        choose_profile(values, ("default",))
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_execution_profile"


@pytest.mark.parametrize(("path", "expected"), [
    ("/exec", True), ("/exec/", True), ("/exec/stream", True), ("/exec/programmatic", True),
    ("/exec/programmatic/cancel", True), ("/v1/exec", True), ("/v1/exec/programmatic", True),
    ("/execute", False), ("/v1/execs", False), ("/upload", False), ("/files/x", False),
    ("/health", False), ("/v1", False)])
def test_the_exec_routes(path: str, expected: bool) -> None:
    assert is_exec_route(path) is expected
