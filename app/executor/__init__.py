"""The API's side of the executor contract: a client for the sidecar's HTTP API."""

from .client import (
    ExecutorClient,
    ExecutorError,
    ExecutorResult,
    OutputChunk,
    StateCapture,
    StateIssue,
)

__all__ = ["ExecutorClient", "ExecutorError", "ExecutorResult", "OutputChunk", "StateCapture",
           "StateIssue"]
