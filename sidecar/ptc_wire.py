"""Programmatic tool calling: what the executor and the sandboxed program agree on.

Shared by the executor (``sidecar/ptc.py``), the code that runs inside the user's
process (``sidecar/ptc_sandbox.py``) and the API (tool names are checked there too).
Standard library only.

The channel between the sandboxed program and the executor is a ``SOCK_SEQPACKET``
unix socket pair: the executor keeps one end, the program gets the other as an fd.
Each message from the program is one JSON object of at most ``MAX_CALL_BYTES``:

- ``{"op": "call", "name": IDENTIFIER, "input": VALUE}`` with exactly one fd
  attached (``SCM_RIGHTS``): a stream socket the executor writes the reply to, as
  one JSON object ``{"ok": true, "result": VALUE}`` or ``{"ok": false, "error": TEXT}``,
  then closes;
- ``{"op": "wait"}``: the program has nothing left to do but wait for replies
  (Python's event loop is idle), so the calls made so far form a round.

A call's input may hold integers of the signed 64-bit range only (``wire_int``): the
API reads JSON with 64-bit integers, so a larger one is refused as a malformed call
(the tool functions raise ``ValueError`` in the program, the executor ends a run that
sends one anyway).

Tool names become identifiers the way the LibreChat client names them in its
prompt: Python keeps ``[A-Za-z0-9_]`` (hyphens and spaces become ``_``), a leading
digit gets a ``_`` and a keyword a ``_tool`` suffix; bash also turns dots into ``_``.
"""

from __future__ import annotations

import keyword
import re

__all__ = ["MAX_CALLS_PER_ROUND", "MAX_CALL_BYTES", "MAX_INT", "MAX_TOOLS", "MAX_TOOL_NAME",
           "MIN_INT", "identifier", "valid_identifier", "wire_int"]

#: The largest message the program may send (a SOCK_SEQPACKET message fits the socket
#: buffer whole).
MAX_CALL_BYTES = 192 * 1024
#: Calls one round may carry; more made at once go out in the rounds after it.
MAX_CALLS_PER_ROUND = 64
MAX_TOOLS = 128
MAX_TOOL_NAME = 256
#: The integers a call's input may hold: what the API's JSON reader takes (signed 64-bit).
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
#: Characters of the longest integer literal in range (``-9223372036854775808``).
_MAX_INT_LITERAL = len(str(MIN_INT))

#: What the client renames (its ``PYTHON_KEYWORDS``): the hard keywords of Python 3.
_PYTHON_RESERVED = frozenset(keyword.kwlist)
_BASH_RESERVED = frozenset((
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do",
    "done", "in", "function", "select", "time", "coproc", "declare", "typeset", "local",
    "readonly", "export", "unset"))
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")


def identifier(name: str, lang: str) -> str:
    """The function name a tool gets in ``lang`` (``py`` or ``bash``); may be empty."""
    spaces = r"[-\s.]" if lang == "bash" else r"[-\s]"
    normalized = re.sub(r"[^a-zA-Z0-9_]", "", re.sub(spaces, "_", name, flags=re.ASCII))
    if normalized[:1].isdigit():
        normalized = "_" + normalized
    if normalized in (_BASH_RESERVED if lang == "bash" else _PYTHON_RESERVED):
        normalized += "_tool"
    return normalized


def valid_identifier(name: object, lang: str) -> bool:
    """A name the executor accepts as a tool function (and nothing a shell would expand)."""
    reserved = _BASH_RESERVED if lang == "bash" else _PYTHON_RESERVED
    return isinstance(name, str) and _IDENTIFIER.fullmatch(name) is not None \
        and name not in reserved


def wire_int(literal: str) -> int:
    """The value of a JSON integer literal of a call's input (``json``'s ``parse_int``);
    ``ValueError`` outside the signed 64-bit range. The length is checked first: a
    literal of thousands of digits is never converted."""
    if len(literal) <= _MAX_INT_LITERAL:
        value = int(literal)
        if MIN_INT <= value <= MAX_INT:
            return value
    raise ValueError(f"an integer outside the signed 64-bit range ({MIN_INT} to {MAX_INT})")
