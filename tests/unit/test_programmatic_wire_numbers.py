"""The client's tool results as the executor takes them: JavaScript writes large numbers
as integers (``JSON.stringify(1e20)`` is ``100000000000000000000``), which no 64-bit JSON
reader takes; they are passed on as the doubles they were, on both sides of the range."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.programmatic.wire import wire_results
from app.errors import BadRequest


def _result(value: Any) -> Any:
    [entry] = wire_results([{"call_id": "c1", "result": value}])
    return entry["result"]


@pytest.mark.parametrize("value", [2 ** 63 - 1, -(2 ** 63), 0, -1, 1.5, True, None, "x"])
def test_values_in_range_pass_as_they_are(value: Any) -> None:
    result = _result(value)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize("value", [2 ** 63, -(2 ** 63) - 1, 10 ** 20, -(10 ** 300)])
def test_integers_past_64_bits_become_doubles(value: int) -> None:
    assert _result(value) == float(value) and isinstance(_result(value), float)
    nested = _result({"a": [1, {"b": value}], "c": value})
    assert nested == {"a": [1, {"b": float(value)}], "c": float(value)}
    assert isinstance(nested["a"][1]["b"], float) and nested["a"][0] == 1


def test_an_integer_no_double_holds_is_refused() -> None:
    with pytest.raises(BadRequest, match="cannot be passed on as JSON"):
        _result(10 ** 400)
