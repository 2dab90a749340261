"""Why a programmatic run ended in ``status: error``, in the words LibreChat's client maps.

The client (``CodeExecutor.mjs``, ``getSafeCodeApiExecutionErrorDetail``) reads the
``error`` of an answer whose ``status`` is ``error`` and shows the model a safe
sentence for exactly these strings, a generic "Code execution failed." otherwise:

- ``Time limit exceeded`` (the step's timeout, or the CPU-time limit),
- ``Out of memory``,
- ``stdout length exceeded`` / ``stderr length exceeded`` (the sandbox's output cap),
- ``Sandbox exited with code N`` (the program killed by a signal none of the limits
  sent, such as ``SIGSEGV``: N is 128 + the signal's number, as a shell reports it),
- ``Sandbox requested an unregistered tool: NAME`` (the code called a tool the request
  did not declare).

Other failures the executor names (too many rounds, a cancel, a malformed tool call)
keep its own words. The program's own failures (an exception, a non-zero exit status)
are not errors: the run completes with them in ``stderr``, as in ``/exec``.
"""

from __future__ import annotations

import re
import signal

from ...executor.programmatic import ProgrammaticStep

__all__ = ["UNREGISTERED_TOOL", "run_failure"]

UNREGISTERED_TOOL = "Sandbox requested an unregistered tool: "
#: How the executor names a call of an undeclared tool (``sidecar/ptc.py``).
_UNDECLARED = re.compile(r"a call of an undeclared tool (?P<q>['\"])(?P<name>.*)(?P=q)\Z",
                         re.DOTALL)
_OUTPUT_CAPS = ("stdout length exceeded", "stderr length exceeded")


def _signal_code(name: str) -> str:
    """The shell's exit code of a death by ``name`` (``SIGKILL``, ``SIGRTMIN+6``, or
    ``SIG33`` for a signal without a name)."""
    base, plus, offset = name.partition("+")
    try:
        if not plus and base.startswith("SIG") and base[3:].isdigit():
            number = int(base[3:])
        else:
            number = signal.Signals[base].value + (int(offset) if plus else 0)
    except (KeyError, ValueError):
        return "unknown"
    return str(128 + number)


def run_failure(step: ProgrammaticStep) -> str | None:
    """The ``error`` of a run that ended in error; None when it completed (the
    program's own failures included)."""
    result = step.result
    if step.failure is not None:
        undeclared = _UNDECLARED.search(step.failure)
        if undeclared is not None:
            return UNREGISTERED_TOOL + undeclared.group("name")
        return step.failure
    if result.status == "timeout":
        return "Time limit exceeded"
    if result.status == "oom":
        return "Out of memory"
    if result.status == "output_limit":
        if result.message in _OUTPUT_CAPS:
            return result.message
        return _OUTPUT_CAPS[1] if result.stderr_truncated else _OUTPUT_CAPS[0]
    if result.status == "error" and result.signal is not None:
        return f"Sandbox exited with code {_signal_code(result.signal)}"
    return None
