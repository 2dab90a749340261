"""``GET /metrics``: Prometheus text format, without authentication.

Scrapers usually carry no API key, so the route is public; it serves only
aggregate numbers (labels are languages, statuses, phases and outcomes, never
tenants, sessions, ids or code). It is left out of the OpenAPI schema: it is not
part of the JSON API.
"""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...metrics import Metrics

__all__ = ["MetricsController"]


class MetricsController(Controller):
    """The app's metrics registry, rendered for a scraper."""

    path = "/metrics"

    @get("/", exclude_from_auth=True, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
    async def scrape(self, metrics: NamedDependency[Metrics]) -> Response[bytes]:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
