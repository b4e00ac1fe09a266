"""The in-process store: entries by key, bounded by bytes, the least recently used evicted
first. One event loop uses it: no locks."""

from __future__ import annotations

from collections import OrderedDict

from gateway.cache.entry import Entry


class MemoryStore:
    __slots__ = ("_items", "bytes", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        # key -> (entry, until when this process serves it, its size)
        self._items: OrderedDict[str, tuple[Entry, float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> Entry | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= now:
            self.delete(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, entry: Entry, until: float) -> None:
        size = entry.size
        if size > self.max_bytes:
            return
        self.delete(key)
        self._items[key] = (entry, until, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= self._items.popitem(last=False)[1][2]

    def delete(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[2]
