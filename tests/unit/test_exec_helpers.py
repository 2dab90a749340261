"""Pure request-normalising logic of the exec service and the key ring."""

from __future__ import annotations

import pytest

from app.auth import KeyRing
from app.domain.exec.requests import cut_output, limit_notice, normalize_args, normalize_timeout
from app.errors import BadRequest, PayloadTooLarge
from app.ids import is_valid_id, new_id


@pytest.mark.parametrize("value,expected", [
    (None, 30.0), (5, 5.0), (999, 60.0), (0.5, 0.5),        # seconds (older clients)
    (1000, 1.0), (1001, 1.001), (2500, 2.5), (15000, 15.0),  # ms, as today's client sends
    (10**9, 60.0)])
def test_timeout_seconds_or_milliseconds(value: float | None, expected: float) -> None:
    assert normalize_timeout(value, default=30, maximum=60) == expected


def test_limit_notices_are_plain_lines() -> None:
    assert limit_notice("timeout", 3.0, 512) == "Time limit exceeded after 3 s"
    assert limit_notice("timeout", 1.5, 512) == "Time limit exceeded after 1.5 s"
    assert limit_notice("oom", 3.0, 512) == "Out of memory (512 MB)"
    assert limit_notice("ok", 3.0, 512) is None and limit_notice("error", 3, 512) is None


@pytest.mark.parametrize("value", [0, -1])
def test_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(BadRequest):
        normalize_timeout(value, default=30, maximum=60)


def test_args_forms_and_limits() -> None:
    assert normalize_args(None) == []
    assert normalize_args("a 'b c'") == ["a", "b c"]
    assert normalize_args(["$(x)", ";"]) == ["$(x)", ";"]
    assert len(normalize_args(["x"] * 256)) == 256
    with pytest.raises(PayloadTooLarge):
        normalize_args(["x"] * 257)
    with pytest.raises(BadRequest):
        normalize_args(["a\x00b"])


def test_cut_output_marks_every_cut() -> None:
    assert cut_output("short", 100, cut_in_sandbox=False) == "short"
    exact = "x" * 100
    assert cut_output(exact, 100, cut_in_sandbox=False) == exact
    cut = cut_output("x" * 101, 100, cut_in_sandbox=False)
    assert cut.startswith("x" * 100) and "1 more bytes not shown" in cut
    assert "program was stopped" in cut_output("x", 100, cut_in_sandbox=True)
    # never splits a multi-byte character into invalid text
    assert cut_output("é" * 60, 101, cut_in_sandbox=False).startswith("é" * 50 + "\n")


def test_keyring_constant_time_lookup() -> None:
    ring = KeyRing(["alpha", "beta"])
    principal = ring.lookup("beta")
    assert principal is not None and principal.tenant == "default"
    assert ring.lookup("gamma") is None and ring.lookup("") is None
    with pytest.raises(ValueError):
        KeyRing([])


def test_ids() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_valid_id(i) for i in ids)
    assert all(i[0].isalnum() for i in ids), "an id never reads as a command-line option"
    assert not is_valid_id("short") and not is_valid_id("a" * 20 + "/")
