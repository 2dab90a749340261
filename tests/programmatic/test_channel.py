"""The tool-call channel from the sandbox's side: what the program may send, and what
the executor refuses. Each refusal ends the run with an error that names it, and the
service carries on. The limits are tried on both sides."""

from __future__ import annotations

import httpx
import pytest

from sidecar.ptc import MAX_DEPTH
from sidecar.ptc_wire import MAX_CALL_BYTES, MAX_CALLS_PER_ROUND

from .helpers import TOOLS, drive, step

# Finds the program's end of the channel (any code of the run can: it is the program's).
CHANNEL = """
import array, os, socket, time
def channel():
    for name in os.listdir('/proc/self/fd'):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if sock.type == socket.SOCK_SEQPACKET:
            return sock
        sock.close()
    return None
ch = channel()
def send(data, fds=()):
    extra = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))] if fds else []
    ch.sendmsg([data], extra)
"""


def refused(client: httpx.Client, attack: str) -> str:
    answer = step(client, {"code": CHANNEL + attack + "\ntime.sleep(15)\nprint('alive')",
                           "tools": TOOLS, "timeout": 10000})
    assert answer["status"] == "error", answer
    assert "alive" not in answer["stdout"]
    return str(answer["error"])


@pytest.mark.attack("protocol")
@pytest.mark.parametrize(("attack", "reason"), [
    ("send(b'not json')", "not JSON"),
    ("send(b'[1, 2]')", "unknown shape"),
    ("a, b = socket.socketpair()\nsend(b'{\"op\":\"call\",\"name\":\"rm\",\"input\":{}}', "
     "[b.fileno()])", "Sandbox requested an unregistered tool: rm"),  # the client's words
    ("r, w = os.pipe()\nsend(b'{\"op\":\"call\",\"name\":\"add\",\"input\":{}}', [r])",
     "reply fd is not a socket"),
    ("send(b'{\"op\":\"call\",\"name\":\"add\",\"input\":{}}')", "unknown shape"),
    ("a, b = socket.socketpair()\nsend(b'{\"op\":\"call\",\"name\":\"add\",\"input\":{}}', "
     "[a.fileno(), b.fileno()])", "unknown shape"),
    ("send(b'{\"op\":\"call\",\"name\":\"add\",\"input\":{}}', [os.open('/', 0)] * 6)",
     "too many fds"),
    (f"send(b' ' * {MAX_CALL_BYTES + 1})", f"over {MAX_CALL_BYTES} bytes"),
    # what JSON (and so the API) cannot carry: refused here, never a 5xx there
    ("send(b'{\"op\":\"call\",\"name\":\"add\",\"input\":NaN}')", "with NaN"),
    ("send(b'{\"op\":\"call\",\"name\":\"add\",\"input\":-Infinity}')",
     "with -Infinity"),
    ("send(b'{\"op\":\"wait\",\"x\":\"\\\\ud800\"}')", "lone surrogate"),
    (f"send(b'{{\"op\":\"wait\",\"x\":' + b'[' * {MAX_DEPTH} + b']' * {MAX_DEPTH} + b'}}')",
     f"nested more than {MAX_DEPTH} deep"),
    ("send(b'{\"op\":\"wait\",\"x\":' + b'[' * 5000 + b']' * 5000 + b'}')",
     "nested too deep"),
    # a flood of waits cannot keep the executor's step loop busy
    ("for _ in range(2000):\n    send(b'{\"op\":\"wait\"}')", "wait messages in one round"),
])
def test_the_executor_refuses_what_breaks_the_protocol(client: httpx.Client, attack: str,
                                                        reason: str) -> None:
    error = refused(client, attack)
    assert error == reason or (error.startswith("Invalid tool call from the program")
                               and reason in error), error
    answer, _ = drive(client, {"code": "print(await add(a=1, b=1))"})
    assert answer["stdout"] == "2\n", "the service carries on"


def test_a_message_at_the_size_cap_is_a_call(client: httpx.Client) -> None:
    fits = "x" * (MAX_CALL_BYTES - 200)
    answer, rounds = drive(client, {"code": f"print(len(await add(a='{fits}', b='')))"})
    assert answer["stdout"] == f"{len(fits)}\n" and len(rounds) == 1, answer["error"]
    code = (f"try:\n    await add(a='{'x' * MAX_CALL_BYTES}', b='')\n"
            "except ValueError as exc:\n    print(exc)")
    answer, rounds = drive(client, {"code": code})
    assert rounds == [] and "larger than" in answer["stdout"], answer


def test_calls_per_round_are_capped(client: httpx.Client) -> None:
    """A round carries at most ``MAX_CALLS_PER_ROUND`` calls: a wider gather is split
    into rounds (each within the cap), never refused, and every call gets its answer."""
    def code(calls: int) -> str:
        return (f"r = await asyncio.gather(*(add(a=i, b=1) for i in range({calls})))\n"
                "print(sum(r), len(r))")
    for calls, split in ((MAX_CALLS_PER_ROUND, [MAX_CALLS_PER_ROUND]),
                         (MAX_CALLS_PER_ROUND + 1, [MAX_CALLS_PER_ROUND, 1]),
                         (2 * MAX_CALLS_PER_ROUND + 5,
                          [MAX_CALLS_PER_ROUND, MAX_CALLS_PER_ROUND, 5])):
        answer, rounds = drive(client, {"code": code(calls)})
        assert answer["status"] == "completed", answer
        assert [len(r) for r in rounds] == split, [len(r) for r in rounds]
        assert answer["stdout"] == f"{sum(range(1, calls + 1))} {calls}\n", answer
        ids = [call["id"] for r in rounds for call in r]
        assert len(set(ids)) == calls
    too_many = [{"call_id": f"c{i}", "result": 1} for i in range(MAX_CALLS_PER_ROUND + 1)]
    response = client.post("/exec/programmatic", json={"continuation_token": "x",
                                                       "tool_results": too_many})
    assert response.status_code == 400


def test_an_unanswered_call_raises(client: httpx.Client) -> None:
    answer = step(client, {"code": "try:\n    await add(a=1, b=1)\n"
                                   "except ToolError as exc:\n    print(exc)",
                           "tools": TOOLS})
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": [{"call_id": "call_someone_else", "result": 1}]})
    assert done["stdout"] == "no result was given for this call\n", done


def test_an_ordinary_run_has_no_channel(client: httpx.Client) -> None:
    body = client.post("/exec", json={"lang": "py", "code": CHANNEL + "print(ch)"}).json()
    assert body["stdout"] == "None\n", body


@pytest.mark.attack("protocol")
def test_a_reply_socket_made_blocking_cannot_stall_the_executor(client: httpx.Client) -> None:
    """The program keeps the reply socket it passed (one file description, one
    O_NONBLOCK flag) and keeps making it blocking, never reading: the executor's writes
    never block on it, so the step still ends at its timeout."""
    import time
    attack = CHANNEL + """
import threading
a, b = socket.socketpair()
send(b'{"op":"call","name":"add","input":{}}', [a.fileno()])
def blocking():
    while True:
        os.set_blocking(a.fileno(), True)
threading.Thread(target=blocking, daemon=True).start()
send(b'{"op":"wait"}')
time.sleep(1000)
"""
    answer = step(client, {"code": attack, "tools": TOOLS, "timeout": 3000})
    assert answer["status"] == "tool_call_required", answer
    [call] = answer["tool_calls"]
    started = time.monotonic()
    done = step(client, {"continuation_token": answer["continuation_token"],
                         "tool_results": [{"call_id": call["id"], "result": "x" * 1_000_000}]})
    assert done["status"] == "error" and done["error"] == "Time limit exceeded", done
    assert time.monotonic() - started < 20, "the step ended at its timeout"
    answer, _ = drive(client, {"code": "print(await add(a=1, b=1))"})
    assert answer["stdout"] == "2\n", "the service carries on"
