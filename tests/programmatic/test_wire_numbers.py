"""Numbers in a tool call's input: only what the API's JSON reader takes (integers of the
signed 64-bit range, finite doubles). A larger integer is refused as a malformed call,
on both sides of the limit: the tool functions raise ``ValueError`` in the program
(Python) or fail with the message (bash), and the executor ends a run whose program
sends one anyway. Either way the run ends as the program's own error, never as a
sandbox failure (``10**400`` was a 503 "the sandbox failed; try again")."""

from __future__ import annotations

import httpx
import pytest

from sidecar.ptc_wire import MAX_INT, MIN_INT, wire_int

from .helpers import TOOLS, drive, step
from .test_channel import CHANNEL, refused

IN_RANGE = [MAX_INT, MIN_INT, 0, -1]
OUT_OF_RANGE = [MAX_INT + 1, MIN_INT - 1, 10**400, -(10**400)]
REFUSAL = "an integer outside the signed 64-bit range"


def test_the_rule_on_both_sides_of_the_limit() -> None:
    for value in IN_RANGE:
        assert wire_int(str(value)) == value
    for value in OUT_OF_RANGE:
        with pytest.raises(ValueError, match=REFUSAL):
            wire_int(str(value))
    with pytest.raises(ValueError, match=REFUSAL):  # never converted, whatever its length
        wire_int("9" * 100_000)


@pytest.mark.parametrize("value", IN_RANGE)
def test_python_an_integer_in_range_is_a_call(client: httpx.Client, value: int) -> None:
    answer, rounds = drive(client, {"code": f"print(await add(a={value}, b=0))"})
    assert [call["input"] for calls in rounds for call in calls] == [{"a": value, "b": 0}]
    assert answer["status"] == "completed" and answer["stdout"] == f"{value}\n", answer


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_python_an_integer_out_of_range_raises(client: httpx.Client, value: int) -> None:
    code = (f"try:\n    await add(a={value}, b=0)\n"
            "except ValueError as exc:\n    print(exc)\n"
            f"await add(a={value}, b=0)")
    answer = step(client, {"code": code, "tools": TOOLS})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == ("the input of add() has an integer outside the signed "
                                f"64-bit range ({MIN_INT} to {MAX_INT})\n"), answer
    # uncaught, it is the program's own error, with its traceback
    assert f"ValueError: the input of add() has {REFUSAL}" in answer["stderr"], answer


@pytest.mark.parametrize(("value", "accepted"), [
    (MAX_INT, True), (MIN_INT, True), (MAX_INT + 1, False), (MIN_INT - 1, False)])
def test_bash_both_sides_of_the_limit(client: httpx.Client, value: int,
                                      accepted: bool) -> None:
    code = f"x=$(add '{{\"a\": {value}, \"b\": 0}}') && echo \"x=$x\" || echo \"failed: $?\""
    answer, rounds = drive(client, {"code": code, "lang": "bash"})
    assert answer["status"] == "completed", answer
    if accepted:
        assert [call["input"] for calls in rounds for call in calls] == [{"a": value, "b": 0}]
        assert answer["stdout"] == f"x={value}\n", answer
    else:
        assert rounds == [] and answer["stdout"] == "failed: 1\n", answer
        assert f"the input of add() has {REFUSAL}" in answer["stderr"], answer


# -- the executor's side: a program that writes to the channel itself --------------------

def raw_call(literal: str) -> str:
    call = '{"op":"call","name":"add","input":{"a":' + literal + ',"b":0}}'
    return f"a, b = socket.socketpair()\nsend({call.encode()!r}, [b.fileno()])"


@pytest.mark.parametrize("value", [MAX_INT, MIN_INT])
def test_the_executor_takes_an_integer_in_range(client: httpx.Client, value: int) -> None:
    code = CHANNEL + raw_call(str(value)) + "\nsend(b'{\"op\":\"wait\"}')\nprint(a.recv(4096))"
    answer = step(client, {"code": code, "tools": TOOLS})
    assert answer["status"] == "tool_call_required", answer
    [call] = answer["tool_calls"]
    assert call["input"] == {"a": value, "b": 0}
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": [{"call_id": call["id"], "result": value}]})
    assert done["stdout"] == f"b'{{\"ok\":true,\"result\":{value}}}'\n", done


@pytest.mark.attack("protocol")
@pytest.mark.parametrize(("literal", "reason"), [
    (str(MAX_INT + 1), REFUSAL),
    (str(MIN_INT - 1), REFUSAL),
    ("1" + "0" * 400, REFUSAL),
    ("9" * 100_000, REFUSAL),  # past Python's 4300 digits: refused, never converted
    ("1e400", "a number out of range"),  # a double that would be Infinity
    ("-1e400", "a number out of range"),
])
def test_the_executor_refuses_a_number_the_api_cannot_read(client: httpx.Client,
                                                           literal: str, reason: str) -> None:
    error = refused(client, raw_call(literal))
    assert error.startswith("Invalid tool call from the program: a message with ")
    assert reason in error, error
    answer, _ = drive(client, {"code": "print(await add(a=1, b=1))"})
    assert answer["stdout"] == "2\n", "the service carries on"
