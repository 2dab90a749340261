"""Python session state: signed opaque blobs, their routes, storage, archive and its expiry."""

from .blob import StateSigner, load_key
from .controller import StateController
from .lifecycle import archive_sweep_interval, run_archive_expiry
from .service import StateService
from .store import StateStore

__all__ = ["StateController", "StateService", "StateSigner", "StateStore",
           "archive_sweep_interval", "load_key", "run_archive_expiry"]
