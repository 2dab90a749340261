"""Health endpoints: liveness without dependencies, readiness with them."""

from .controller import HealthController

__all__ = ["HealthController"]
