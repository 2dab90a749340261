"""Runtime sessions (the ``stateful`` execution profile): records, checkpoints, service."""

from .checkpoint import CheckpointLost, Checkpoints
from .records import RuntimeRecord, RuntimeRecords
from .run import RuntimeRef, RuntimeRun
from .service import HINT, RuntimeSessions
from .sweep import run_orphan_sweep, sweep_orphans

__all__ = ["HINT", "CheckpointLost", "Checkpoints", "RuntimeRecord", "RuntimeRecords",
           "RuntimeRef", "RuntimeRun", "RuntimeSessions", "run_orphan_sweep", "sweep_orphans"]
