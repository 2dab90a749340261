"""Runtime sessions (the ``stateful`` execution profile): records, checkpoints, service."""

from .checkpoint import CheckpointLost, Checkpoints
from .records import RuntimeRecord, RuntimeRecords
from .service import HINT, RuntimeRef, RuntimeRun, RuntimeSessions

__all__ = ["HINT", "CheckpointLost", "Checkpoints", "RuntimeRecord", "RuntimeRecords",
           "RuntimeRef", "RuntimeRun", "RuntimeSessions"]
