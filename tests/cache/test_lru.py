"""The cache's pure parts with a fake clock: L1's TTL and LRU bounds, and L2's eviction plan."""

from __future__ import annotations

from llmqueue.cache.eviction import Every, lru_victims
from llmqueue.cache.lru import TTLCache


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(max_entries=3, max_bytes=1000, clock=None):
    evicted: list[tuple[str, int]] = []
    cache = TTLCache(
        max_entries=max_entries,
        max_bytes=max_bytes,
        clock=clock or Clock(),
        on_evict=lambda reason, n: evicted.append((reason, n)),
    )
    return cache, evicted


def test_an_entry_expires_at_its_ttl():
    clock = Clock()
    cache, evicted = make(clock=clock)
    cache.put("a", "A", size=1, expires_at=clock.t + 60)
    clock.t += 59.9
    assert cache.get("a") == "A"
    clock.t += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.bytes == 0
    assert evicted == [("expired", 1)]


def test_an_already_expired_value_is_not_kept():
    clock = Clock()
    cache, _ = make(clock=clock)
    cache.put("a", "A", size=1, expires_at=clock.t)
    assert cache.get("a") is None and len(cache) == 0


def test_the_least_recently_used_goes_at_the_entry_bound():
    clock = Clock()
    cache, evicted = make(max_entries=3, clock=clock)
    for k in "abc":
        cache.put(k, k.upper(), size=1, expires_at=clock.t + 60)
    assert cache.get("a") == "A"  # a is now the most recently used; b the least
    cache.put("d", "D", size=1, expires_at=clock.t + 60)
    assert [cache.get(k) for k in "abcd"] == ["A", None, "C", "D"]
    assert evicted == [("lru", 1)]


def test_the_byte_bound_evicts_as_many_as_needed():
    clock = Clock()
    cache, evicted = make(max_entries=100, max_bytes=100, clock=clock)
    for k in "abcd":
        cache.put(k, k, size=25, expires_at=clock.t + 60)
    cache.put("big", "B", size=60, expires_at=clock.t + 60)
    assert cache.bytes <= 100
    assert [k for k in ["a", "b", "c", "d", "big"] if cache.get(k)] == ["d", "big"]
    assert evicted == [("lru", 3)]


def test_a_value_larger_than_the_bound_is_not_kept_and_evicts_nothing():
    cache, evicted = make(max_bytes=100)
    cache.put("a", "A", size=10, expires_at=2000)
    cache.put("huge", "H", size=101, expires_at=2000)
    assert cache.get("huge") is None and cache.get("a") == "A" and evicted == []


def test_put_replaces_a_key_and_its_size():
    cache, _ = make()
    cache.put("a", "old", size=10, expires_at=2000)
    cache.put("a", "new", size=3, expires_at=2000)
    assert cache.get("a") == "new" and cache.bytes == 3 and len(cache) == 1
    cache.pop("a")
    assert cache.bytes == 0 and cache.get("a") is None


def test_bounds_can_shrink_at_runtime():
    clock = Clock()
    cache, _ = make(max_entries=5, clock=clock)
    for k in "abcde":
        cache.put(k, k, size=1, expires_at=clock.t + 60)
    cache.max_entries = 2
    cache.put("f", "f", size=1, expires_at=clock.t + 60)
    assert len(cache) == 2 and cache.get("e") and cache.get("f")


# --- the database level's eviction plan ------------------------------------------------------


def test_no_victims_within_the_bounds():
    rows = [("a", 10), ("b", 10)]
    assert lru_victims(rows, count=2, total_bytes=20, max_entries=2, max_bytes=20) == []


def test_over_the_entry_bound_evicts_lru_first_down_to_the_low_water_mark():
    rows = [(f"k{i}", 1) for i in range(12)]  # least recently used first
    victims = lru_victims(rows, count=12, total_bytes=12, max_entries=10, max_bytes=10**9)
    assert victims == ["k0", "k1", "k2"]  # down to 9 = 90% of 10: a batch, not one at a time


def test_over_the_byte_bound_evicts_until_under_it():
    rows = [("a", 50), ("b", 10), ("c", 40), ("d", 10)]
    victims = lru_victims(rows, count=4, total_bytes=110, max_entries=100, max_bytes=100)
    assert victims == ["a"]  # 60 bytes left, under 90
    victims = lru_victims(rows, count=4, total_bytes=110, max_entries=100, max_bytes=60)
    assert victims == ["a", "b"]  # 50 bytes left, under 54


def test_every_is_due_once_per_interval():
    clock = Clock(0.0)
    every = Every(30.0, clock=clock)
    assert every.due() and not every.due()
    clock.t = 29.9
    assert not every.due()
    clock.t = 30.0
    assert every.due() and not every.due()
