"""The web console: static pages served by the app, no build step.

``/console/`` is the code console (editor, live output, files, sessions) and
``/console/operator`` the operator page (pools, recent executions, error rates,
sessions per tenant). Both are plain HTML/JS/CSS under ``static/`` and call the
public API like any client, with the API key the user types in (kept in the
tab's ``sessionStorage``). Only the static files skip authentication; every API
call they make is authenticated as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, Router
from litestar.static_files import create_static_files_router

__all__ = ["STATIC_DIR", "console_router"]

STATIC_DIR = Path(__file__).parent / "static"
#: The pages load only their own scripts and styles, and talk only to this origin;
#: produced images are shown from ``blob:`` URLs.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _secure(response: Response[Any]) -> Response[Any]:
    for name, value in _HEADERS.items():
        response.headers[name] = value
    return response


def console_router() -> Router:
    """Serves ``static/`` at ``/console`` (not in the API schema, no credentials needed)."""
    return create_static_files_router(
        path="/console", directories=[STATIC_DIR], html_mode=True, name="console",
        include_in_schema=False, opt={"exclude_from_auth": True}, after_request=_secure)
