"""Execution profiles: the setting, and the choice made from the request's header."""

from __future__ import annotations

import pytest

from app.errors import InvalidExecutionProfile, ProfileMismatch
from app.profiles import choose_profile, is_exec_route
from app.settings import Settings, SettingsError


def test_the_default_setting_serves_only_default() -> None:
    assert Settings.from_env({}).execution_profiles == ("default",)
    assert Settings.from_env({"EXECUTION_PROFILES": " "}).execution_profiles == ("default",)
    assert Settings().execution_profiles == ("default",)
    assert Settings.from_env({"EXECUTION_PROFILES": " Default, default "}
                             ).execution_profiles == ("default",)


@pytest.mark.parametrize(("raw", "message"), [
    ("stateful", "cannot be served yet"),
    ("default,stateful", "cannot be served yet"),
    ("default,aws", "'aws' is not a profile"),
    (",", "at least one"),
])
def test_profiles_that_cannot_be_served_stop_start_up(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"EXECUTION_PROFILES": raw})


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
