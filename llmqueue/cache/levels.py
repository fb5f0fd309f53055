"""The levels in front of the database: this process's L1, and Redis when REDIS_URL is set.

Both hold copies of database entries (``CachedAnswer``) and nothing else; ``llmqueue.cache.store``
confirms every answer they give against the database before serving it. A failing Redis is a
miss, never an error: the database level still answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import caches

from llmqueue.cache import metrics
from llmqueue.cache.lru import TTLCache
from llmqueue.conf import conf

log = logging.getLogger(__name__)

#: Redis keys: the prefix, then the cache key (a scope and a sha256, well under 250 characters)
REDIS_PREFIX = "llmqueue:cache:"


@dataclasses.dataclass(frozen=True)
class CachedAnswer:
    """An upstream answer as the cache holds it."""

    key: str
    response: Any
    #: the database entry's created_at: which version of the entry this copy is
    created_at: dt.datetime
    expires_at: dt.datetime
    size: int
    #: where the lookup found it: "l1", "redis" or "db"
    level: str = "db"


# --- L1: this process ----------------------------------------------------------------------------


def _count_eviction(reason: str, n: int) -> None:
    metrics.EVICTIONS.labels("l1", reason).inc(n)


_local: TTLCache[CachedAnswer] = TTLCache(max_entries=0, max_bytes=0, on_evict=_count_eviction)


def local_level() -> TTLCache[CachedAnswer]:
    """This process's L1, with its bounds as the settings say now."""
    _local.max_entries = int(conf.CACHE_L1_MAX_ENTRIES)
    _local.max_bytes = int(conf.CACHE_L1_MAX_BYTES)
    return _local


def local_get(key: str) -> CachedAnswer | None:
    answer = local_level().get(key)
    return None if answer is None else dataclasses.replace(answer, level="l1")


def local_put(answer: CachedAnswer) -> None:
    l1 = local_level()
    l1.put(answer.key, answer, size=answer.size, expires_at=answer.expires_at.timestamp())
    _gauge(l1)


def local_drop(keys: Iterable[str]) -> None:
    l1 = local_level()
    for key in keys:
        l1.pop(key)
    _gauge(l1)


def local_clear() -> None:
    """Empty this process's L1 (tests, and an operator's purge of everything)."""
    _local.clear()
    _gauge(_local)


def _gauge(l1: TTLCache[CachedAnswer]) -> None:
    metrics.L1_ENTRIES.set(len(l1))
    metrics.L1_BYTES.set(l1.bytes)


# --- Redis: shared by the processes of a fleet ----------------------------------------------------


def shared_on() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


def shared_get_many(keys: list[str]) -> dict[str, CachedAnswer]:
    if not keys or not shared_on():
        return {}
    try:
        raw = caches["default"].get_many([REDIS_PREFIX + k for k in keys])
    except Exception as exc:  # a cache level that is down is a miss
        log.warning("response cache: Redis read failed: %s", exc)
        return {}
    found = {}
    for redis_key, value in raw.items():
        key = redis_key.removeprefix(REDIS_PREFIX)
        try:
            response, created_at, expires_at, size = value
        except (TypeError, ValueError):  # written by another version: ignore it
            continue
        found[key] = CachedAnswer(key, response, created_at, expires_at, size, level="redis")
    return found


def shared_put(answer: CachedAnswer, *, now: dt.datetime) -> None:
    ttl = (answer.expires_at - now).total_seconds()
    if ttl < 1 or not shared_on():
        return
    value = (answer.response, answer.created_at, answer.expires_at, answer.size)
    try:
        caches["default"].set(REDIS_PREFIX + answer.key, value, timeout=int(ttl))
    except Exception as exc:
        log.warning("response cache: Redis write failed: %s", exc)


def shared_drop(keys: list[str]) -> None:
    if not keys or not shared_on():
        return
    try:
        caches["default"].delete_many([REDIS_PREFIX + k for k in keys])
    except Exception as exc:
        log.warning("response cache: Redis delete failed: %s", exc)
