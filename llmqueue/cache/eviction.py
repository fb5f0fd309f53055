"""When and what the database level (L2) evicts. Pure: the storage feeds it rows and a clock.

The table is bounded by entries and by bytes. Checking the bounds costs a COUNT and a SUM, so
a process checks at most every ``interval`` seconds (``Every``), not on each write; between
two checks the table may overshoot by what was written meanwhile. Once over a bound, the
least recently used entries go until the table is under ``low_water`` of both bounds, so
that the next few writes do not start another eviction at once (eviction in batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

#: evict down to this share of each bound
LOW_WATER = 0.9


def lru_victims(
    rows: Iterable[tuple[str, int]],
    *,
    count: int,
    total_bytes: int,
    max_entries: int,
    max_bytes: int,
    low_water: float = LOW_WATER,
) -> list[str]:
    """The keys to evict, from ``rows`` of (key, size) in least-recently-used-first order.

    ``count`` and ``total_bytes`` describe the whole table. Empty while both bounds hold.
    """
    if count <= max_entries and total_bytes <= max_bytes:
        return []
    target_count = int(max_entries * low_water)
    target_bytes = int(max_bytes * low_water)
    victims: list[str] = []
    for key, size in rows:
        if count <= target_count and total_bytes <= target_bytes:
            break
        victims.append(key)
        count -= 1
        total_bytes -= size
    return victims


class Every:
    """True at most once per ``interval`` seconds: ``if every.due(): ...``."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next = float("-inf")

    def due(self) -> bool:
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True
