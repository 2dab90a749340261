"""``POST /exec/programmatic``: code that calls the client's tools, paused between rounds."""

from .controller import ProgrammaticController
from .service import ProgrammaticService
from .store import RunStore
from .tokens import ContinuationTokens

__all__ = ["ContinuationTokens", "ProgrammaticController", "ProgrammaticService", "RunStore"]
