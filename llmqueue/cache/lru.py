"""The in-process level (L1): a bounded least-recently-used map whose entries also expire.

Pure: no Django, and time comes from an injectable clock (epoch seconds), so that tests can
move it. Bounded twice, by entries and by bytes, because one embedding answer can weigh as
much as a thousand short chat answers.

    l1 = TTLCache(max_entries=1000, max_bytes=64 << 20, clock=time.time)
    l1.put("k", answer, size=812, expires_at=time.time() + 3600)
    l1.get("k")       # the answer, now the most recently used; None once expired or evicted
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")


class _Slot(NamedTuple, Generic[V]):
    value: V
    size: int
    expires_at: float


class TTLCache(Generic[V]):
    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        on_evict: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        #: called with (reason, how many): "expired" or "lru"; for the metrics
        self.on_evict = on_evict
        self._slots: OrderedDict[str, _Slot[V]] = OrderedDict()  # oldest use first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> V | None:
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.expires_at <= self.clock():
            self._drop(key)
            self._evicted("expired", 1)
            return None
        self._slots.move_to_end(key)
        return slot.value

    def put(self, key: str, value: V, *, size: int, expires_at: float) -> None:
        """Keep ``value`` until ``expires_at``, unless the bounds push it out first.

        A value larger than the whole byte bound is not kept at all.
        """
        self._drop(key)
        if size > self.max_bytes or self.max_entries <= 0 or expires_at <= self.clock():
            return
        self._slots[key] = _Slot(value, size, expires_at)
        self._bytes += size
        self._shrink()

    def pop(self, key: str) -> None:
        self._drop(key)

    def clear(self) -> None:
        self._slots.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._bytes -= slot.size

    def _shrink(self) -> None:
        # Least recently used first. Expired entries are dropped when they are next read; an
        # unread one is by then among the least recently used anyway.
        lru = 0
        while len(self._slots) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._slots)))
            lru += 1
        self._evicted("lru", lru)

    def _evicted(self, reason: str, n: int) -> None:
        if n and self.on_evict is not None:
            self.on_evict(reason, n)
