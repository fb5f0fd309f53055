"""The response cache: an identical request is answered once, and then from the cache.

    keys.py      the key: a hash of the canonical JSON of the whole request, scoped to its
                 owner (or shared, for models listed in CACHE_SHARED_MODELS)   (pure)
    lru.py       L1, each process's bounded LRU with TTL                        (pure)
    eviction.py  when and what the database level evicts                        (pure)
    levels.py    L1's instance, and Redis (Django's cache) when REDIS_URL is set
    store.py     the services: lookups through the levels, confirmation against the
                 database level (L2, the CacheEntry table, the truth), writes, eviction, purges
    warm.py      pre-filling the cache from a JSONL file of requests, through the queue
    metrics.py   Prometheus metrics

Where it plugs in (``llmqueue.jobs``, the only writer of job status):

- at submission, a cacheable job whose answer is cached is created already ``succeeded``
  with ``cache_hit``; one whose twin (same key) is queued or running *follows* it: it is not
  claimable, and it finishes with its leader's answer (single-flight);
- in the drain's record step, a success is written to L2 in one upsert per step, and the
  leader's followers are completed in the same transaction; a leader that ends any other way
  releases its followers to run on their own.

A job's ``cache: false`` keeps it out of all of this; ``cache_ttl`` accepts only answers
younger than that, and shortens the life of the answer it stores.
"""

from llmqueue.cache.keys import SHARED, cache_key, cache_scope, canonical_json
from llmqueue.cache.levels import CachedAnswer, local_clear
from llmqueue.cache.store import (
    StoreItem,
    cache_confirm,
    cache_evict,
    cache_keys_for,
    cache_lookup_db,
    cache_lookup_many,
    cache_purge,
    cache_store_many,
)

__all__ = [
    "SHARED",
    "CachedAnswer",
    "StoreItem",
    "cache_confirm",
    "cache_evict",
    "cache_key",
    "cache_keys_for",
    "cache_lookup_db",
    "cache_lookup_many",
    "cache_purge",
    "cache_scope",
    "cache_store_many",
    "canonical_json",
    "local_clear",
]
