"""A store in process memory: for tests and single-process demos, gone on restart.

With `max_items` it keeps at most that many documents, and with `max_bytes` at most that
much of them by `size`, forgetting the least recently used first (the response cache's
memory LRU: CACHE_MAX_ENTRIES, CACHE_MAX_BYTES); counters are not counted.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from typing import Any

from core.stores import Item


class MemoryStore:
    blocking = False

    def __init__(
        self,
        max_items: int | None = None,
        *,
        max_bytes: int | None = None,
        size: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.max_items = max_items
        # A count alone does not bound memory: a thousand documents of a MiB each is a GiB.
        self.max_bytes = max_bytes if size is not None else None
        self._size = size
        self._sizes: dict[str, int] = {}
        self.bytes = 0  # what the documents kept take, by `size`
        self._bounded = bool(max_items or self.max_bytes)
        # In use order when bounded: least recently used first.
        self._items: dict[str, Item] = {}
        # key -> (expires_at, counters); the event loop is the only writer, so no lock.
        self._counters: dict[str, tuple[float, dict[str, int]]] = {}
        # (expires_at, key) of every counter created: expired ones are dropped from the
        # front, O(log n) per new caller instead of a sweep of the whole table.
        self._expiries: list[tuple[float, str]] = []

    def get(self, key: str) -> Item | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at is not None and item.expires_at <= time.time():
            if self._bounded:
                self.delete(key)  # its room goes to live entries
            return None
        if self._bounded:
            self._items[key] = self._items.pop(key)  # now the most recently used
        return item

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        items = self._items
        if not self._bounded:
            old = items.get(key)
            items[key] = Item(key, dict(doc), expires_at, old.last_used if old else None)
            return
        old = items.pop(key, None)
        self.bytes -= self._sizes.pop(key, 0)
        max_bytes = self.max_bytes
        if max_bytes and self._size is not None:
            size = self._size(doc)
            if size > max_bytes:
                return  # larger than the whole bound: not kept (nor the one it replaced)
            self._sizes[key] = size
            self.bytes += size
        items[key] = Item(key, dict(doc), expires_at, old.last_used if old else None)
        max_items = self.max_items
        while (max_items and len(items) > max_items) or (max_bytes and self.bytes > max_bytes):
            self.delete(next(iter(items)))

    def update(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> bool:
        # The event loop (or the CLI's one thread) is the only writer: test and write are
        # one step.
        if self.get(key) is None:
            return False
        self.put(key, doc, expires_at=expires_at)
        return True

    def delete(self, key: str) -> bool:
        self.bytes -= self._sizes.pop(key, 0)
        return self._items.pop(key, None) is not None

    def scan(self, prefix: str) -> list[Item]:
        keys = sorted(k for k in self._items if k.startswith(prefix))
        return [item for k in keys if (item := self.get(k)) is not None]

    def touch(self, key: str, when: float) -> None:
        item = self._items.get(key)
        if item is not None:
            self._items[key] = Item(item.key, item.doc, item.expires_at, when)

    def _counter(self, key: str, expires_at: float) -> dict[str, int]:
        now = time.time()
        entry = self._counters.get(key)
        if entry is None or entry[0] <= now:
            expiries = self._expiries
            while expiries and expiries[0][0] <= now:
                _, old = heapq.heappop(expiries)
                stale = self._counters.get(old)
                if stale is not None and stale[0] <= now:
                    del self._counters[old]
            entry = (expires_at, {})
            self._counters[key] = entry
            heapq.heappush(expiries, (expires_at, key))
        return entry[1]

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        counters = self._counter(key, expires_at)
        for name, amount in amounts.items():
            counters[name] = counters.get(name, 0) + amount
        return dict(counters)

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        counters = self._counter(key, expires_at)
        used = counters.get(name, 0)
        if used >= limit:
            return None
        added = min(amount, limit - used)
        counters[name] = used + added
        return added

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        now = time.time()
        return [
            (key, dict(entry[1]))
            for key, entry in sorted(self._counters.items())
            if key.startswith(prefix) and entry[0] > now
        ]
