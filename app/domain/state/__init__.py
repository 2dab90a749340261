"""Python session state: signed opaque blobs, their routes, storage and archive."""

from .blob import StateSigner, load_key
from .controller import StateController
from .service import StateService
from .store import StateStore

__all__ = ["StateController", "StateService", "StateSigner", "StateStore", "load_key"]
