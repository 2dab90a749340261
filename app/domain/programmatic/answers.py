"""A programmatic step's answer, built from what the step and its bookkeeping produced:
``tool_call_required`` (the round's calls and its continuation token) or the run's end
(``completed``, or ``error`` in the words LibreChat's client maps)."""

from __future__ import annotations

from ...executor.programmatic import ProgrammaticStep
from ..exec.requests import cut_output, file_entry, limit_notice
from ..exec.staging import OutputFiles, delivery_failure
from ..state.schemas import StateOutcome
from .schemas import ProgrammaticResponse, ToolCallOut
from .store import RunRecord
from .wire import with_notice

__all__ = ["ended", "paused"]


def paused(record: RunRecord, outcome: ProgrammaticStep, token: str, *,
           output_limit: int) -> ProgrammaticResponse:
    """The run waits for the client's tool results."""
    result = outcome.result
    return ProgrammaticResponse(
        status="tool_call_required", session_id=record.session_id, continuation_token=token,
        tool_calls=[ToolCallOut(call.id, call.name, call.input) for call in outcome.tool_calls],
        stdout=cut_output(result.stdout, output_limit, result.stdout_truncated),
        stderr=cut_output(result.stderr, output_limit, result.stderr_truncated))


def ended(record: RunRecord, outcome: ProgrammaticStep, failure: str | None,
          outputs: OutputFiles | None, state: StateOutcome | None, *, output_limit: int,
          memory_mb: int) -> ProgrammaticResponse:
    """The run is over: its output, stored files, state and runtime session."""
    result = outcome.result
    # Why the run ended, in stderr too: LibreChat's client shows the model ``error`` only
    # for the strings it knows (``failures.py``), a bare "Code execution failed." else.
    notice = limit_notice(result.status, record.timeout, memory_mb) or (
        f"The run ended: {failure}" if failure is not None else None)
    stderr = with_notice(result.stderr, notice)
    files = [] if outputs is None else [
        *(file_entry(meta) for meta in outputs.stored),
        *(file_entry(meta, inherited=True) for meta in outputs.inherited)]
    return ProgrammaticResponse(
        status="completed" if failure is None else "error", session_id=record.session_id,
        stdout=cut_output(result.stdout, output_limit, result.stdout_truncated),
        stderr=cut_output(stderr, output_limit, result.stderr_truncated),
        files=files, error=failure,
        skipped_files=outputs.skipped if outputs is not None else [],
        deleted_files=[item.path for item in outputs.deleted] if outputs is not None else [],
        artifact_delivery=delivery_failure(outputs),
        has_state=state.has_state if state is not None else None,
        state_size=state.state_size if state is not None else None,
        state_errors=list(state.errors) if state is not None else None,
        runtime_session_id=record.runtime.runtime_session_id if record.runtime else None,
        runtime_status=record.runtime.status if record.runtime else None)
