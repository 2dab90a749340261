"""``GET /metrics``: the Prometheus text exposition of this app instance."""

from .controller import MetricsController

__all__ = ["MetricsController"]
