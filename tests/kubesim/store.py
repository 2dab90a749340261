"""The object store: one global resourceVersion, the watch history, change signals.

Everything runs on the emulator's event loop and every write is synchronous, so
each write (and each PATCH, read-modify-write included) is atomic. Every write
bumps the one global counter, stamps ``metadata.resourceVersion`` and appends an
event to a bounded history, from which watches resume; ``compact()`` drops it
(like etcd compaction), after which resuming from an older version is a 410.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Protocol

import attrs

from .resources import RESOURCES, ResourceType

__all__ = ["Store", "StoreEvent", "WatchSink"]

Obj = dict[str, Any]


@attrs.frozen
class StoreEvent:
    """One committed write. ``obj``/``prev`` are snapshots: never mutate them."""

    rv: int
    resource: ResourceType
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    prev: Obj | None


class WatchSink(Protocol):
    """What the store feeds: an open watch stream."""

    resource: ResourceType

    def offer(self, event: StoreEvent) -> None: ...

    def close(self) -> None: ...


class Store:
    """In-memory objects by resource, namespace and name."""

    def __init__(self, namespaces: set[str], history_limit: int = 10_000,
                 first_rv: int = 1000) -> None:
        self.rv = first_rv
        self.namespaces = set(namespaces)
        self.history_limit = history_limit
        #: Every event with a version above this is in the history.
        self.horizon = first_rv
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r.key: {} for r in RESOURCES}
        self._uids: dict[str, tuple[ResourceType, str, str]] = {}
        self._history: collections.deque[StoreEvent] = collections.deque()
        self._sinks: set[WatchSink] = set()
        self._waiters: list[asyncio.Future[None]] = []

    # -- reads (the stored dicts: callers copy before handing them out) -------------

    def get(self, resource: ResourceType, namespace: str, name: str) -> Obj | None:
        return self._objects[resource.key].get((namespace, name))

    def objects(self, resource: ResourceType, namespace: str | None = None) -> list[Obj]:
        table = self._objects[resource.key]
        return [table[key] for key in sorted(table)
                if namespace is None or key[0] == namespace]

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        resource, namespace, name = where
        obj = self.get(resource, namespace, name)
        return None if obj is None else (resource, obj)

    def all_objects(self) -> Iterator[tuple[ResourceType, Obj]]:
        for resource in RESOURCES:
            for obj in self.objects(resource):
                yield resource, obj

    # -- writes -------------------------------------------------------------------

    def _stamp(self, obj: Obj) -> tuple[int, Obj]:
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return self.rv, stored

    def create(self, resource: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        assert key not in self._objects[resource.key], key
        rv, stored = self._stamp(obj)
        self._objects[resource.key][key] = stored
        self._uids[meta["uid"]] = (resource, *key)
        self._publish(StoreEvent(rv, resource, "ADDED", stored, None))
        return copy.deepcopy(stored)

    def update(self, resource: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        prev = self._objects[resource.key][key]
        rv, stored = self._stamp(obj)
        self._objects[resource.key][key] = stored
        self._publish(StoreEvent(rv, resource, "MODIFIED", stored, prev))
        return copy.deepcopy(stored)

    def delete(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        prev = self._objects[resource.key].pop((namespace, name))
        self._uids.pop(prev["metadata"]["uid"], None)
        rv, stored = self._stamp(prev)  # a DELETED event carries the deletion's version
        self._publish(StoreEvent(rv, resource, "DELETED", stored, prev))
        return copy.deepcopy(stored)

    def _publish(self, event: StoreEvent) -> None:
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.horizon = self._history.popleft().rv
        for sink in list(self._sinks):
            if sink.resource is event.resource:
                sink.offer(event)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- history and watches ------------------------------------------------------

    def compact(self) -> int:
        """Forget the history (etcd compaction): older versions can no longer resume."""
        self._history.clear()
        self.horizon = self.rv
        return self.rv

    def events_since(self, resource: ResourceType, rv: int) -> list[StoreEvent] | None:
        """The events after ``rv``, or None when some of them were compacted away."""
        if rv < self.horizon:
            return None
        return [e for e in self._history if e.rv > rv and e.resource is resource]

    def add_sink(self, sink: WatchSink) -> None:
        self._sinks.add(sink)

    def remove_sink(self, sink: WatchSink) -> None:
        self._sinks.discard(sink)

    def close_sinks(self) -> int:
        """End every open watch (as an apiserver does on its watch timeout)."""
        sinks = list(self._sinks)
        for sink in sinks:
            sink.close()
        return len(sinks)

    def sinks(self) -> list[WatchSink]:
        return list(self._sinks)

    async def wait_changed(self, seen: int, timeout: float | None) -> None:
        """Return once a write newer than ``seen`` exists, or after ``timeout``."""
        if self.rv > seen:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)

    def poke(self) -> None:
        """Wake the controllers without a write (a timer of theirs may be due)."""
        self._wake()
