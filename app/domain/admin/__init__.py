"""The operator API (``/admin``): pools, recent executions, error rates, sessions per tenant.

Only keys listed in ``ADMIN_API_KEYS`` may use it; every other credential gets 403.
"""

from .controller import AdminController
from .service import AdminService

__all__ = ["AdminController", "AdminService"]
