"""``POST /exec``: run code in a fresh sandbox and answer the flat contract result."""

from .controller import ExecController
from .service import ExecService

__all__ = ["ExecController", "ExecService"]
