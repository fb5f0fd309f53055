"""The response cache's services: keys for jobs, lookups through the levels, the database level.

    key = cache_keys_for(owner_id=user.pk)("chat", payload, True)  # or None
    found = cache_lookup_many({key: max_age_s})     # reads only, outside any transaction
    with transaction.atomic():
        hits = cache_confirm({key: max_age_s}, found, now=now)   # confirmed and counted
    ...
    cache_store_many([StoreItem(...)], now=now)     # in the drain's record transaction

L2, the ``CacheEntry`` table, is the truth. An answer found in L1 or Redis is served only once
a one-row UPDATE of its L2 entry (same key, same ``created_at``, not expired) matched, and that
UPDATE is also what counts the hit and marks the entry used for LRU. So a purged, evicted,
expired or replaced entry stops being served at once by every process, hit counts are exact,
and the copies above L2 only save reading (and decoding) the answer from the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from llmqueue.cache import metrics
from llmqueue.cache.eviction import Every, lru_victims
from llmqueue.cache.keys import (
    cache_key,
    cache_scope,
    key_owner_id,
    model_is_shared,
    shared_model_names,
)
from llmqueue.cache.levels import (
    CachedAnswer,
    local_drop,
    local_get,
    local_put,
    shared_drop,
    shared_get_many,
    shared_put,
)
from llmqueue.conf import conf
from llmqueue.db.rows import db_param, placeholders, rows_insert, rows_read
from llmqueue.models import CacheEntry

#: rows per statement where a list of keys goes into an IN (...)
CHUNK = 500


def cache_keys_for(*, owner_id: int) -> Callable[[str, Mapping[str, Any], bool], str | None]:
    """``key(kind, payload, cache)``: the cache key of one of this owner's jobs, or None when
    the job must not use the cache. Scoped to the owner unless the payload's model is in
    ``CACHE_SHARED_MODELS``. The settings are read once, for all the jobs of a submission.
    """
    enabled = conf.CACHE_ENABLED
    shared_models = shared_model_names(conf.CACHE_SHARED_MODELS)
    own = cache_scope(owner_id=owner_id, shared=False)
    shared = cache_scope(owner_id=owner_id, shared=True)

    def key(kind: str, payload: Mapping[str, Any], cache: bool) -> str | None:
        if not cache or not enabled:
            return None
        is_shared = model_is_shared(str(payload.get("model", "")), shared_models)
        return cache_key(scope=shared if is_shared else own, kind=kind, payload=payload)

    return key


def _fresh(answer: CachedAnswer, max_age_s: int | None, now: dt.datetime) -> bool:
    if answer.expires_at <= now:
        return False
    return max_age_s is None or answer.created_at >= now - dt.timedelta(seconds=max_age_s)


def cache_lookup_db(
    wanted: Mapping[str, int | None], *, now: dt.datetime
) -> dict[str, CachedAnswer]:
    """Like ``cache_lookup_many``, from the database level alone and uncounted."""
    keys = list(wanted)
    found = {}
    alive = db_param(CacheEntry, "expires_at", now)
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        # SQL written once (llmqueue.db.rows): a submission runs this for all its keys, twice
        # (the second time under the write lock, for answers stored meanwhile).
        rows = rows_read(
            CacheEntry,
            ("key", "response", "created_at", "expires_at", "size_bytes"),
            f'SELECT {{columns}} FROM {{table}} WHERE "key" IN ({placeholders(part)}) '
            "AND expires_at > %s",
            [*part, alive],
        )
        for key, response, created_at, expires_at, size in rows:
            answer = CachedAnswer(key, response, created_at, expires_at, size, level="db")
            if _fresh(answer, wanted[key], now):
                found[key] = answer
    return found


def cache_lookup_many(
    wanted: Mapping[str, int | None], *, now: dt.datetime | None = None
) -> dict[str, CachedAnswer]:
    """Candidate answers for ``wanted`` ({key: max age in seconds or None}), fastest level first.

    Reads only, so call it before the submitting transaction; serve nothing it returns before
    ``cache_confirm`` confirmed it.
    """
    now = now or timezone.now()
    found: dict[str, CachedAnswer] = {}
    for key, max_age in wanted.items():
        answer = local_get(key)
        if answer is not None and _fresh(answer, max_age, now):
            found[key] = answer
    rest = [k for k in wanted if k not in found]
    for key, answer in shared_get_many(rest).items():
        if _fresh(answer, wanted[key], now):
            found[key] = answer
    rest = [k for k in rest if k not in found]
    if rest:
        found.update(cache_lookup_db({k: wanted[k] for k in rest}, now=now))
    _missed(len(wanted) - len(found))
    return found


def _missed(n: int) -> None:
    if n:
        metrics.MISSES.inc(n)


def _touch(
    answers: Iterable[CachedAnswer], uses: Mapping[str, int], now: dt.datetime
) -> list[CachedAnswer]:
    """The answers whose entry is still the one they copy (same ``created_at``, not expired),
    counted as used ``uses[key]`` times. One UPDATE for one answer; for many, the entry rows
    are locked in key order first (the order a drain's upsert takes them in: no deadlock on
    PostgreSQL), then updated by how many times each is used."""
    answers = sorted(answers, key=lambda a: a.key)
    if len(answers) == 1:
        (a,) = answers
        entry = CacheEntry.objects.filter(key=a.key, created_at=a.created_at, expires_at__gt=now)
        touched = entry.update(hits=F("hits") + uses.get(a.key, 1), last_hit_at=now, used_at=now)
        return answers if touched else []
    live = dict(
        CacheEntry.objects.select_for_update()
        .filter(key__in=[a.key for a in answers], expires_at__gt=now)
        .order_by("key")
        .values_list("key", "created_at")
    )
    valid = [a for a in answers if live.get(a.key) == a.created_at]
    by_uses: dict[int, list[str]] = defaultdict(list)
    for a in valid:
        by_uses[uses.get(a.key, 1)].append(a.key)
    for n, keys in by_uses.items():
        for start in range(0, len(keys), CHUNK):
            CacheEntry.objects.filter(key__in=keys[start : start + CHUNK]).update(
                hits=F("hits") + n, last_hit_at=now, used_at=now
            )
    return valid


def cache_confirm(
    wanted: Mapping[str, int | None],
    found: Mapping[str, CachedAnswer],
    *,
    now: dt.datetime,
    uses: Mapping[str, int] | None = None,
) -> dict[str, CachedAnswer]:
    """The answers of ``found`` that the database level confirms, counted as hits (``uses``:
    how many jobs each serves, 1 by default).

    Call inside the transaction that creates the jobs they answer: the hit counts and the
    copies to the faster levels happen only if it commits. A stale copy from L1 or Redis (its
    entry was replaced or purged) is dropped, and the database is asked once more.
    """
    uses = uses or {}
    confirmed = {a.key: a for a in _touch(found.values(), uses, now)}
    stale = [k for k, a in found.items() if k not in confirmed and a.level != "db"]
    if stale:
        local_drop(stale)
        shared_drop(stale)
        again = cache_lookup_db({k: wanted[k] for k in stale}, now=now)
        confirmed.update((a.key, a) for a in _touch(again.values(), uses, now))
    _missed(len(found) - len(confirmed))
    if confirmed:
        transaction.on_commit(lambda: _hits_served(list(confirmed.values()), now), robust=True)
    return confirmed


def _hits_served(answers: list[CachedAnswer], now: dt.datetime) -> None:
    for answer in answers:
        metrics.HITS.labels(answer.level).inc()
        if answer.level != "l1":
            local_put(answer)
        if answer.level == "db":
            shared_put(answer, now=now)


# --- writes -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoreItem:
    """An upstream answer to keep: a succeeded job's."""

    key: str
    kind: str
    model: str
    response: Any
    #: the job's cache_ttl: a shorter life than CACHE_TTL_S (None: the default)
    ttl_s: int | None = None


_STORE_FIELDS = (
    "key",
    "scope",
    "owner",
    "model",
    "kind",
    "response",
    "size_bytes",
    "hits",
    "last_hit_at",
    "created_at",
    "used_at",
    "expires_at",
)


def cache_store_many(items: Sequence[StoreItem], *, now: dt.datetime | None = None) -> int:
    """Write answers to the database level in one upsert; returns how many entries.

    Call inside the transaction that completes their jobs. A key already present gets the new
    answer, a new ``created_at`` (so copies of the old one elsewhere stop being served) and a
    new expiry; its hit count carries on.
    """
    if not items:
        return 0
    now = now or timezone.now()
    default_ttl = int(conf.CACHE_TTL_S)
    entries: dict[str, tuple[Any, ...]] = {}
    for item in items:  # the last answer of a key wins: an upsert may not touch a row twice
        ttl = min(default_ttl, item.ttl_s) if item.ttl_s else default_ttl
        entries[item.key] = (
            item.key,
            item.key.split("/", 1)[0],
            key_owner_id(item.key),
            item.model,
            item.kind,
            item.response,
            len(json.dumps(item.response, separators=(",", ":")).encode()),
            0,
            None,
            now,
            now,
            now + dt.timedelta(seconds=ttl),
        )
    # One statement for all (llmqueue.db.rows): this runs in every drain step.
    rows_insert(
        CacheEntry,
        _STORE_FIELDS,
        [entries[k] for k in sorted(entries)],  # sorted: one row lock order, as in cache_confirm
        conflict=["key"],
        update=["response", "size_bytes", "model", "kind", "created_at", "used_at", "expires_at"],
    )
    n = len(entries)
    transaction.on_commit(lambda: _stored(n), robust=True)
    return n


_evict_every = Every(30.0)


def _stored(n: int) -> None:
    metrics.STORES.inc(n)
    _evict_every.interval = float(conf.CACHE_EVICT_INTERVAL_S)
    if _evict_every.due():
        cache_evict()


# --- eviction and purges -------------------------------------------------------------------


def _delete(keys: list[str], *, reason: str) -> int:
    n = 0
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        with transaction.atomic():  # short: one chunk per transaction
            n += CacheEntry.objects.filter(key__in=chunk).delete()[0]
        local_drop(chunk)
        shared_drop(chunk)
    if n:
        metrics.EVICTIONS.labels("db", reason).inc(n)
    return n


def _lru_rows() -> Iterator[tuple[str, int]]:
    """(key, size) of every entry, least recently used first, a page at a time: the eviction
    usually stops after the first page."""
    lru = CacheEntry.objects.order_by("used_at", "id").values_list("key", "size_bytes")
    offset = 0
    while True:
        page = list(lru[offset : offset + CHUNK])
        yield from page
        if len(page) < CHUNK:
            return
        offset += CHUNK


def cache_evict(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete expired entries, then the least recently used ones while the table is over
    ``CACHE_MAX_ENTRIES`` or ``CACHE_MAX_BYTES`` (down to 90% of them). Returns the counts.

    The drains call it after a write, at most every ``CACHE_EVICT_INTERVAL_S`` per process.
    """
    now = now or timezone.now()
    # .order_by(): with the model's ordering, SQLite walks the LRU index over the whole table
    # instead of the expiry index over the expired few
    expired = list(
        CacheEntry.objects.filter(expires_at__lte=now).order_by().values_list("key", flat=True)
    )
    gone_expired = _delete(expired, reason="expired")
    size = CacheEntry.objects.aggregate(n=Count("id"), b=Sum("size_bytes"))
    victims = lru_victims(
        _lru_rows(),
        count=size["n"],
        total_bytes=size["b"] or 0,
        max_entries=int(conf.CACHE_MAX_ENTRIES),
        max_bytes=int(conf.CACHE_MAX_BYTES),
    )
    return {"expired": gone_expired, "lru": _delete(victims, reason="lru")}


def cache_purge(*, keys: Iterable[str] | None = None, expired: bool = False) -> int:
    """An operator's purge: the entries of ``keys``, or with ``expired`` every expired one."""
    if expired:
        stale = CacheEntry.objects.filter(expires_at__lte=timezone.now()).order_by()
        return _delete(list(stale.values_list("key", flat=True)), reason="expired")
    return _delete(list(keys or ()), reason="purged")
