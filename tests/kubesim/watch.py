"""Watches: NDJSON event streams with resume, bookmarks and 410 Gone.

``GET ...?watch=true`` streams ``{"type": ..., "object": ...}`` lines:

- no ``resourceVersion`` (or ``"0"``): synthetic ``ADDED`` events for the current
  objects, then changes; ``resourceVersion=N``: every change after N, replayed
  from the history, then live ones;
- a version older than the history (after ``Store.compact()``) is expired: by
  default the stream answers 200 with one ``ERROR`` event carrying a 410 ``Expired``
  Status and ends, as the apiserver's watch cache does; with
  ``WatchOptions.expired_as_status`` the request itself answers HTTP 410;
- selectors filter like the watch cache: an object that stops matching arrives as
  ``DELETED`` (its previous state, at the new version), one that starts matching
  as ``ADDED``;
- ``allowWatchBookmarks=true`` adds ``BOOKMARK`` events every
  ``WatchOptions.bookmark_interval`` seconds (and on ``KubeSim.bookmark()``);
  ``sendInitialEvents=true`` ends the initial events with a bookmark annotated
  ``k8s.io/initial-events-end``;
- ``timeoutSeconds`` ends the stream cleanly, and so does ``Store.close_sinks()``;
  ``Watcher.expire()`` ends it with an in-stream 410 instead (etcd compaction
  overtaking a watch).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson

from .errors import bad_request, expired
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Store, StoreEvent

__all__ = ["WatchOptions", "Watcher", "open_watch", "stream_events"]

Obj = dict[str, Any]
Event = tuple[str, Obj]


@attrs.define
class WatchOptions:
    """Knobs of the emulated watch behaviour (changeable while running)."""

    bookmark_interval: float = 1.0
    expired_as_status: bool = False


class Watcher:
    """One open watch: filters store events into its queue."""

    def __init__(self, resource: ResourceType, namespace: str | None, labels: LabelSelector,
                 fields: FieldSelector, bookmarks: bool) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False

    def passes(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        return ((self.namespace is None or meta.get("namespace") == self.namespace)
                and self.labels.matches(meta.get("labels"))
                and self.fields.matches(self.resource, obj))

    def offer(self, event: StoreEvent) -> None:
        if self.closed:
            return
        now, before = self.passes(event.obj), self.passes(event.prev)
        if event.type == "DELETED":
            kind = "DELETED" if before else None
            obj = event.obj
        elif now:
            kind = "MODIFIED" if before else "ADDED"
            obj = event.obj
        elif before:
            kind = "DELETED"  # left the selection: its previous state at the new version
            assert event.prev is not None
            obj = copy.deepcopy(event.prev)
            obj["metadata"]["resourceVersion"] = str(event.rv)
        else:
            kind = None
            obj = event.obj
        if kind is not None:
            self.queue.put_nowait((kind, obj))

    def bookmark(self, rv: int, initial_end: bool = False) -> None:
        if self.closed or not self.bookmarks:
            return
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        self.queue.put_nowait(("BOOKMARK", {"kind": self.resource.kind,
                                            "apiVersion": self.resource.api_version,
                                            "metadata": meta}))

    def expire(self) -> None:
        """End the stream with an in-stream 410, as a watch served from etcd does when
        compaction passes it."""
        if not self.closed:
            body = expired("The resourceVersion for the provided watch is too old.").body
            self.queue.put_nowait(("ERROR", body))
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


def open_watch(store: Store, resource: ResourceType, namespace: str | None,
               labels: LabelSelector, fields: FieldSelector,
               params: dict[str, str], options: WatchOptions) -> Watcher:
    """Register a watch and queue its initial events; an expired version raises 410
    (``expired_as_status``) or yields a watcher whose only event is the ERROR."""
    bookmarks = params.get("allowWatchBookmarks") == "true"
    watcher = Watcher(resource, namespace, labels, fields, bookmarks)
    requested = params.get("resourceVersion", "")
    initial = requested in ("", "0")
    if not initial:
        try:
            since = int(requested)
        except ValueError as exc:
            raise bad_request(f"invalid resource version: {requested!r}") from exc
        events = store.events_since(resource, since)
        if events is None:
            error = expired(f"too old resource version: {since} ({store.horizon})")
            if options.expired_as_status:
                raise error
            watcher.queue.put_nowait(("ERROR", error.body))
            watcher.close()
            return watcher
        for event in events:
            watcher.offer(event)
    else:
        for obj in store.objects(resource, namespace):
            if watcher.passes(obj):
                watcher.queue.put_nowait(("ADDED", copy.deepcopy(obj)))
    if initial and params.get("sendInitialEvents") == "true":
        watcher.bookmark(store.rv, initial_end=True)
    store.add_sink(watcher)
    return watcher


async def stream_events(store: Store, watcher: Watcher, write: Callable[[bytes], Awaitable[None]],
                        options: WatchOptions, timeout: float | None) -> None:
    """Write the watcher's events as NDJSON until it closes, times out or is cancelled."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    next_bookmark = loop.time() + options.bookmark_interval
    try:
        while True:
            now = loop.time()
            wait = next_bookmark - now if watcher.bookmarks else None
            if deadline is not None:
                wait = deadline - now if wait is None else min(wait, deadline - now)
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return
                watcher.bookmark(store.rv)
                next_bookmark = loop.time() + options.bookmark_interval
                continue
            if item is None:
                return
            kind, obj = item
            await write(orjson.dumps({"type": kind, "object": obj}) + b"\n")
    finally:
        watcher.close()
        store.remove_sink(watcher)

