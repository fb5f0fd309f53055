"""The response cache's Prometheus metrics (``llmqueue.metrics`` serves them at /metrics).

Events, counted by the process where they happen (multiprocess mode adds the processes up):

    llmqueue_cache_hits_total{level}           a submission answered from l1 | redis | db
    llmqueue_cache_misses_total                a cacheable submission no level could answer
    llmqueue_cache_followers_total             jobs that waited for an identical job in flight
    llmqueue_cache_stores_total                answers written to the database level
    llmqueue_cache_evictions_total{level,reason}   l1 | db; expired | lru | purged
    llmqueue_cache_l1_entries, _l1_bytes       the in-process level, summed over live processes

State, read from the database when scraped (``CacheStateCollector``, in ``llmqueue.metrics``'
state registry):

    llmqueue_cache_entries, llmqueue_cache_bytes   the database level
    llmqueue_cache_hit_ratio                       answered without an upstream call (hits and
                                                   followers) among the cacheable jobs that
                                                   succeeded in the last 5 minutes

The fleet-wide hit rate over any window is also
``sum(rate(llmqueue_cache_hits_total[5m])) / (that + sum(rate(llmqueue_cache_misses_total[5m])))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmqueue.models import CacheEntry, Job, Status

HITS = Counter(
    "llmqueue_cache_hits",
    "Submissions answered from the response cache, by the level that held the answer.",
    ["level"],
)
MISSES = Counter("llmqueue_cache_misses", "Cacheable submissions that no cache level answered.")
FOLLOWERS = Counter(
    "llmqueue_cache_followers",
    "Jobs that waited for an identical job in flight instead of calling upstream.",
)
STORES = Counter("llmqueue_cache_stores", "Answers written to the database level of the cache.")
EVICTIONS = Counter(
    "llmqueue_cache_evictions",
    "Cache entries removed, by level (l1, db) and reason (expired, lru, purged).",
    ["level", "reason"],
)
L1_ENTRIES = Gauge(
    "llmqueue_cache_l1_entries",
    "Entries in the in-process cache level (summed over live processes).",
    multiprocess_mode="livesum",
)
L1_BYTES = Gauge(
    "llmqueue_cache_l1_bytes",
    "Bytes of answers in the in-process cache level (summed over live processes).",
    multiprocess_mode="livesum",
)

#: the window of llmqueue_cache_hit_ratio, seconds
RATIO_WINDOW_S = 300


class CacheStateCollector(Collector):
    """The database level's size and the recent hit ratio, read on each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = CacheEntry.objects.aggregate(n=Count("id"), b=Sum("size_bytes"))
        yield GaugeMetricFamily(
            "llmqueue_cache_entries", "Entries in the database level of the cache.", size["n"]
        )
        yield GaugeMetricFamily(
            "llmqueue_cache_bytes",
            "Bytes of answers in the database level of the cache.",
            size["b"] or 0,
        )
        since = timezone.now() - timedelta(seconds=RATIO_WINDOW_S)
        recent = Job.objects.filter(
            finished_at__gte=since, status=Status.SUCCEEDED, cache_key__isnull=False
        ).aggregate(n=Count("id"), hits=Count("id", filter=Q(cache_hit=True)))
        yield GaugeMetricFamily(
            "llmqueue_cache_hit_ratio",
            "Share of cacheable jobs succeeded in the last 5 minutes that no upstream call "
            "answered (cache hits and single-flight followers).",
            recent["hits"] / recent["n"] if recent["n"] else 0.0,
        )
