"""A large tool result reaches the program whole even when a round ends while it is
still being written: another task of the program made the next round's call meanwhile
(the executor keeps the unwritten reply across the pause and the next step finishes
it). Real sandboxes, results of several MB, Python and bash."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from .helpers import TOOLS, answer_calls, step

#: The large result: several MB of text (the API takes 32 MB a step).
BIG = "0123456789abcdef" * (8 * 1024 * 1024 // 16)
BIG_DIGEST = hashlib.sha256(BIG.encode()).hexdigest()


def drive_big(client: httpx.Client, body: dict[str, Any],
              ) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Run ``body`` to its end, answering ``add(a=0, b=0)`` with ``BIG`` and every
    other call as ``helpers.drive`` does."""
    answer = step(client, body)
    rounds = []
    while answer["status"] == "tool_call_required":
        calls = answer["tool_calls"]
        rounds.append(calls)
        results = [{"call_id": call["id"], "result": BIG, "is_error": False}
                   if call["input"] == {"a": 0, "b": 0} else answer_calls([call])[0]
                   for call in calls]
        answer = step(client, {"continuation_token": answer["continuation_token"],
                               "tool_results": results})
    return answer, rounds


PYTHON = """
import hashlib
async def chain():
    x = await add(a=1, b=1)
    return await mul(a=x, b=3)
big, product = await asyncio.gather(add(a=0, b=0), chain())
print(len(big), hashlib.sha256(big.encode()).hexdigest(), product)
"""


def test_python_a_large_result_survives_the_next_round(client: httpx.Client) -> None:
    """``chain`` gets its small result, calls ``mul`` and the loop goes idle while the
    large result is still coming: ``mul`` is a round of its own, and the large result
    still arrives whole (it was cut off: ``ToolError: add: no result came back``)."""
    for _ in range(2):  # the race, twice (before the fix the first run was cut off)
        answer, rounds = drive_big(client, {"code": PYTHON, "tools": TOOLS})
        assert answer["status"] == "completed", answer
        assert answer["stdout"] == f"{len(BIG)} {BIG_DIGEST} 6\n", answer["stderr"][-500:]
        names = [sorted(str(call["name"]) for call in calls) for calls in rounds]
        assert names == [["add", "add"], ["mul"]], names


# bash: a background job calls ``add(a=0, b=0)`` through the channel and reads its reply
# slowly (one chunk, then nothing until the script says so); meanwhile the script calls
# ``add`` and then ``mul``, whose round ends while the large reply is half written.
# Its own reader is what a busy machine makes of the tool function's reader: slow.
READER = """
import array, hashlib, json, os, socket, sys, time
channel = socket.socket(fileno=int(os.environ["K8SI_TOOLS_FD"]))
mine, theirs = socket.socketpair()
channel.sendmsg([b'{"op":"call","name":"add","input":{"a":0,"b":0}}'],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
theirs.close()
open("/tmp/sent", "w").close()
chunks = [mine.recv(65536)]
while not os.path.exists("/tmp/go"):
    time.sleep(0.01)
while chunk := mine.recv(1 << 20):
    chunks.append(chunk)
try:
    reply = json.loads(b"".join(chunks))
except ValueError:
    sys.exit(f"cut off after {sum(map(len, chunks))} bytes")
result = reply["result"]
print(len(result), hashlib.sha256(result.encode()).hexdigest())
"""

BASH = f"""
read -r py _ <<< "$(declare -f add | sed -n 3p)"
cat > /tmp/reader.py <<'EOF'
{READER}
EOF
"$py" -E -s -S /tmp/reader.py > /tmp/big.out &
while [ ! -e /tmp/sent ]; do sleep 0.01; done
x=$(add '{{"a": 1, "b": 1}}')
y=$(mul "{{\\"a\\": $x, \\"b\\": 3}}")
touch /tmp/go
wait $! || echo "the reader failed: $?"
echo "$(cat /tmp/big.out) $y"
"""


def test_bash_a_large_result_survives_the_next_round(client: httpx.Client) -> None:
    answer, rounds = drive_big(client, {"code": BASH, "tools": TOOLS, "lang": "bash"})
    assert answer["status"] == "completed", answer
    assert answer["stdout"] == f"{len(BIG)} {BIG_DIGEST} 6\n", answer["stderr"][-500:]
    names = [sorted(str(call["name"]) for call in calls) for calls in rounds]
    # the large reply's step began before mul's round ended (the reader waits for it)
    earlier = sorted(name for names_of_round in names[:-1] for name in names_of_round)
    assert names[-1] == ["mul"] and earlier == ["add", "add"], names

