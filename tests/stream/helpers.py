"""Reading ``POST /exec/stream`` in tests: events with their arrival times."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
import httpx

from app.cli_client import iter_sse


@attrs.frozen
class Event:
    name: str
    data: dict[str, Any]
    #: Seconds since the request was sent.
    at: float


@attrs.frozen
class Streamed:
    status_code: int
    headers: httpx.Headers
    events: list[Event]

    @property
    def result(self) -> dict[str, Any]:
        assert self.events and self.events[-1].name == "result", self.events[-3:]
        return self.events[-1].data

    def text(self, stream: str) -> str:
        return "".join(e.data["text"] for e in self.events if e.name == stream)


def stream_exec(client: httpx.Client, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> Streamed:
    """Run ``body`` through ``/exec/stream`` to the end."""
    started = time.monotonic()
    with client.stream("POST", "/exec/stream", json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return Streamed(response.status_code, response.headers, [])
        events = [Event(name, json.loads(data), time.monotonic() - started)
                  for name, data in iter_sse(response.iter_lines())]
        return Streamed(response.status_code, response.headers, events)
