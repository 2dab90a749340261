"""Variables survive between executions of a session; what cannot be kept is named.

Real sandboxes, real Valkey, over real HTTP: no mocks.
"""

from __future__ import annotations

import httpx

from tests.conftest import OTHER_KEY, RunningApp
from tests.state.helpers import error_names, run_py


def test_a_variable_survives(client: httpx.Client) -> None:
    first = run_py(client, "x = 41")
    assert first["status"] == "ok" and first["has_state"] is True
    assert first["state_size"] > 0 and first["state_errors"] == []
    second = run_py(client, "print(x + 1)", first["session_id"])
    assert second["stdout"] == "42\n", second
    assert second["session_id"] == first["session_id"]


def test_functions_see_globals_reassigned_later(client: httpx.Client) -> None:
    session = run_py(client, "y = 1\ndef f():\n    return y\n")["session_id"]
    answer = run_py(client, "y = 100\nprint(f())", session)
    assert answer["stdout"] == "100\n", answer
    # ... and a function defined now sees a global restored from before
    answer = run_py(client, "def g():\n    return y + 1\nprint(g())", session)
    assert answer["stdout"] == "101\n", answer


def test_dataframe_and_figure_survive(client: httpx.Client) -> None:
    code = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [4, 5, 6])
ax.set_title("kept")
"""
    first = run_py(client, code)
    assert first["status"] == "ok" and first["state_errors"] == [], first
    check = """
print(type(df).__name__, int(df["a"].sum()), "".join(df["b"]))
print(type(fig).__name__, ax.get_title(), ax.figure is fig)
print(pd.__name__, plt.__name__)
fig.savefig("/mnt/data/kept.png")
"""
    second = run_py(client, check, first["session_id"])
    assert second["status"] == "ok", second
    assert second["stdout"].splitlines() == ["DataFrame 6 xyz", "Figure kept True",
                                             "pandas matplotlib.pyplot"]
    assert [f["name"] for f in second["files"]] == ["kept.png"]


def test_lambda_and_class_instance_survive(client: httpx.Client) -> None:
    code = """
offset = 10
add = lambda a: a + offset
class Counter:
    def __init__(self):
        self.n = 0
    def bump(self):
        self.n += offset
        return self.n
counter = Counter()
counter.bump()
"""
    session = run_py(client, code)["session_id"]
    answer = run_py(client, "offset = 1\nprint(add(1), counter.bump(), "
                            "isinstance(counter, Counter), type(counter).__name__)", session)
    assert answer["stdout"] == "2 11 True Counter\n", answer


def test_generator_and_open_file_are_reported_the_rest_survives(client: httpx.Client) -> None:
    code = """
gen = (i for i in range(3))
handle = open("/etc/hostname")
nested = {"f": open("/etc/hostname")}
kept = [1, 2, 3]
"""
    first = run_py(client, code)
    assert first["status"] == "ok" and first["has_state"] is True, first
    assert error_names(first) == {"gen", "handle", "nested"}
    types = {e["name"]: e["type"] for e in first["state_errors"]}
    assert types["gen"] == "generator" and types["handle"] == "TextIOWrapper"
    answer = run_py(client, "print(kept, 'gen' in dir(), 'handle' in dir())",
                    first["session_id"])
    assert answer["stdout"] == "[1, 2, 3] False False\n", answer


def test_shared_references_survive(client: httpx.Client) -> None:
    session = run_py(client, "a = [1]\nb = {'same': a}")["session_id"]
    answer = run_py(client, "a.append(2)\nprint(b['same'], b['same'] is a)", session)
    assert answer["stdout"] == "[1, 2] True\n", answer


def test_state_after_exit_and_error(client: httpx.Client) -> None:
    exited = run_py(client, "import sys\nv = 'exit'\nsys.exit(3)")
    assert exited["status"] == "error" and exited["code"] == 3 and exited["has_state"]
    failed = run_py(client, "w = 'error'\nraise ValueError('boom')", exited["session_id"])
    assert failed["status"] == "error" and "ValueError: boom" in failed["stderr"]
    answer = run_py(client, "print(v, w)", exited["session_id"])
    assert answer["stdout"] == "exit error\n", answer  # STATE_CAPTURE_ON_ERROR defaults to on


def test_deleting_every_name_leaves_no_state(client: httpx.Client) -> None:
    session = run_py(client, "z = 1")["session_id"]
    answer = run_py(client, "del z", session)
    assert answer["has_state"] is False and answer["state_size"] == 0
    assert client.get(f"/state/{session}/info").json()["exists"] is False


def test_sessions_and_tenants_never_share_state(client: httpx.Client, api: RunningApp) -> None:
    a = run_py(client, "secret_a = 'only in A'")["session_id"]
    b = run_py(client, "print('secret_a' in dir())")
    assert b["stdout"] == "False\n" and b["session_id"] != a
    with api.client(OTHER_KEY) as other:
        foreign = run_py(other, "print('secret_a' in dir())", a)
        assert foreign["stdout"] == "False\n" and foreign["session_id"] != a
        assert other.get(f"/state/{a}").status_code == 404
        assert other.get(f"/state/{a}/info").json()["exists"] is False
    assert run_py(client, "print(secret_a)", a)["stdout"] == "only in A\n"


def test_a_restored_namespace_is_still_a_main_module(client: httpx.Client) -> None:
    session = run_py(client, "import json\nvalue = 1")["session_id"]
    answer = run_py(client, "import sys\nprint(type(__builtins__).__name__, __name__, "
                            "sys.modules['__main__'].value, json.dumps([value]))", session)
    assert answer["stdout"] == "module __main__ 1 [1]\n", answer


def test_other_languages_have_no_state_fields(client: httpx.Client) -> None:
    answer = client.post("/exec", json={"lang": "bash", "code": "echo hi"}).json()
    assert answer["has_state"] is None and answer["state_errors"] is None
