"""Single-flight: identical cacheable jobs follow one leader instead of calling upstream again.

A follower is never claimed. It finishes with its leader's answer in the leader's own
transition, or is released (``follows`` cleared) to run on its own when the leader ends any
other way; the reaper's rescue pass is the net under both.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from llmqueue import metrics
from llmqueue.cache import (
    CachedAnswer,
    StoreItem,
    cache_confirm,
    cache_lookup_db,
    cache_store_many,
)
from llmqueue.db.rows import placeholders, rows_read
from llmqueue.jobs.transitions import jobs_transition
from llmqueue.models import Job, Status, status_literals


def cache_wanted(jobs: Iterable[Job]) -> dict[str, int | None]:
    """{cache key: the max age its jobs accept} (the strictest, when twins differ)."""
    wanted: dict[str, int | None] = {}
    for job in jobs:
        if job.cache_key is None:
            continue
        if job.cache_key not in wanted:
            wanted[job.cache_key] = job.cache_ttl
        elif job.cache_ttl is not None:
            prior = wanted[job.cache_key]
            wanted[job.cache_key] = job.cache_ttl if prior is None else min(prior, job.cache_ttl)
    return wanted


def by_cache(
    jobs: list[Job],
    wanted: dict[str, int | None],
    found: dict[str, CachedAnswer],
    *,
    now: dt.datetime,
    single: bool,
) -> list[tuple[Job, Job]]:
    """Settle unsaved cacheable jobs: a hit (submit -> succeeded), a follower of the leader in
    flight, or a leader. Returns (follower, leader) pairs of twins among ``jobs`` themselves,
    to be linked once the leader has an id. Call inside the submitting transaction.
    """
    uses = Counter(job.cache_key for job in jobs if job.cache_key in found)
    hits = cache_confirm(wanted, found, now=now, uses=uses)
    # Only then the leaders of the rest. Lock order on PostgreSQL: a bulk submission never
    # waits for a leader (skip locked); a single one waits only when it holds no entry row (no
    # hit), so it never holds one while waiting for a job row, as a drain's record step may.
    rest = sorted(set(wanted) - set(hits))
    if single and rest:
        _twins_take_turns(rest[0])
    leaders = _leaders(rest, single=single)
    leaderless = {k: wanted[k] for k in rest if k not in leaders}
    if leaderless:
        # A leader that finished since the lookup left its answer in the database level.
        late = cache_lookup_db(leaderless, now=now)
        uses = Counter(job.cache_key for job in jobs if job.cache_key in late)
        hits.update(cache_confirm(leaderless, late, now=now, uses=uses))
    firsts: dict[str, Job] = {}
    twins: list[tuple[Job, Job]] = []
    for job in jobs:
        key = job.cache_key
        if key is None:
            continue
        if key in hits:
            job.status = Status.SUCCEEDED  # the "cached answer" transition: an insert
            job.cache_hit = True
            job.result = hits[key].response
            job.started_at = job.finished_at = now
        elif key in leaders:
            job.follows_id = leaders[key]
        elif key in firsts:
            twins.append((job, firsts[key]))
        else:
            firsts[key] = job
    return twins


def _leaders(keys: list[str], *, single: bool) -> dict[str, int]:
    """The job each key's twins follow: its oldest queued or running job that follows no one.

    The leader must not finish (and settle its followers) between this read and the commit
    of the new follower's insert. A single submission locks the leader's row (PostgreSQL)
    and waits for it. A bulk one must not wait for many rows, which could deadlock with a
    drain's step: it locks the leaders it can (skip locked), follows the others without a
    lock, and once committed, waits for each running one of those alone and settles any
    follower it left behind (``_followers_recheck``). (A queued leader that is cancelled
    meanwhile leaves its new followers to the reaper's rescue.) SQLite's IMMEDIATE
    transactions need none of this: nothing else writes while a submission does.
    """
    if not keys:
        return {}
    if single:
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        first = _in_flight([keys[0]], ("id",), limit=1, lock=lock)
        return {keys[0]: first[0][0]} if first else {}
    found: dict[str, int] = {}
    skip = connection.features.has_select_for_update_skip_locked
    for start in range(0, len(keys), 500):
        rows = _in_flight(
            keys[start : start + 500],
            ("id", "cache_key"),
            lock=" FOR UPDATE SKIP LOCKED" if skip else "",
        )
        for pk, key in rows:
            found.setdefault(key, pk)
    rest = [k for k in keys if k not in found]
    if rest and skip:
        finishing: set[int] = set()
        for start in range(0, len(rest), 500):
            for pk, key, status in _in_flight(
                rest[start : start + 500], ("id", "cache_key", "status")
            ):
                # A queued leader's lock is a claim's, which makes it run, not end: no need to
                # check on it. A running one's may be its answer being recorded.
                if found.setdefault(key, pk) == pk and status == Status.RUNNING:
                    finishing.add(pk)
        if finishing:
            transaction.on_commit(lambda: _followers_recheck(sorted(finishing)), robust=True)
    return found


#: a leader's states, as literals: SQLite matches the partial index job_cache_leader only
#: then (with "status IN (?, ?)" it read every queued job, or every job, instead)
_LEADING = status_literals((Status.QUEUED, Status.RUNNING))


def _in_flight(
    keys: list[str], fields: tuple[str, ...], *, limit: int | None = None, lock: str = ""
) -> list[list[Any]]:
    """``fields`` of the queued or running jobs that follow no one and have one of these cache
    keys, oldest first."""
    sql = (
        f"SELECT {{columns}} FROM {{table}} WHERE cache_key IN ({placeholders(keys)}) "
        f"AND status IN ({_LEADING}) AND follows_id IS NULL ORDER BY id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return rows_read(Job, fields, sql + lock, keys)


def _followers_recheck(leader_ids: list[int]) -> None:
    """After a commit that added followers to leaders it could not lock: wait for each leader's
    lock in turn (one row per transaction: nothing to deadlock on), then settle the followers
    it left behind, had it finished meanwhile without seeing them."""
    for leader_id in leader_ids:
        with transaction.atomic():
            Job.objects.select_for_update().filter(pk=leader_id).values_list("pk").first()
            followers_rescue(now=timezone.now(), leaders=[leader_id])


def _twins_take_turns(key: str) -> None:
    """PostgreSQL: identical single submissions take turns, under a transaction-scoped advisory
    lock on their key, so that two of them never both find no leader and both lead. (SQLite's
    IMMEDIATE transactions already take turns. Bulk submissions do not lock keys: a race of
    two of them, rare, costs at worst one more upstream call.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # 64 bits of the key's sha256, as the signed bigint the lock takes
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(key[-16:], 16) - (1 << 63)])


def followers_release(leader_ids: list[int], *, now: dt.datetime) -> int:
    """The queued followers of leaders that ended without an answer: each runs on its own."""
    if not leader_ids:
        return 0
    if not (ids := _followers(leader_ids)):
        return 0
    return jobs_transition("follower_release", where=Q(pk__in=ids), follows=None, available_at=now)


def _followers(leader_ids: list[int] | None = None) -> list[int]:
    """The ids of these leaders' followers (None: of any leader's). Looked up alone first:
    asked in one statement with a status guard, SQLite's planner walks the status index over
    the whole queue instead of the small partial index job_followers. Its SQL is written once
    (``llmqueue.db.rows``): every drain step runs it."""
    sql = "SELECT {columns} FROM {table} WHERE follows_id IS NOT NULL"
    if leader_ids is not None:
        if not leader_ids:
            return []
        sql += f" AND follows_id IN ({placeholders(leader_ids)})"
    return [pk for (pk,) in rows_read(Job, ("id",), sql, leader_ids or ())]


def leaders_settle(
    answers: dict[int, Any], *, store: Sequence[StoreItem], ended: list[int], now: dt.datetime
) -> None:
    """After a record step: the jobs that succeeded (``answers``: id -> body) complete their
    followers (queued -> succeeded, cache_hit), ``store`` goes to the cache, and the ``ended``
    (dead) ones release their followers. A few statements per step, however many jobs: a
    SELECT of the followers (an UPDATE only if there are some) and an upsert.
    """
    if answers and (ids := _followers(list(answers))):
        _followers_take_answers(Q(pk__in=ids), now=now)
    cache_store_many(store, now=now)
    followers_release(ended, now=now)


def _followers_take_answers(followers: Q, *, now: dt.datetime) -> int:
    """queued followers -> succeeded with their leader's answer, in one UPDATE (the answer is
    read from the leader's row, written earlier in the same transaction)."""
    answer = Job.objects.filter(pk=OuterRef("follows_id")).values("result")[:1]
    n = jobs_transition(
        "follow_through",
        where=followers,
        result=Subquery(answer),
        cache_hit=True,
        error="",
        started_at=now,
        finished_at=now,
    )
    metrics.jobs_finished(Status.SUCCEEDED, n)
    return n


def followers_rescue(*, now: dt.datetime, leaders: list[int] | None = None) -> int:
    """The net under single-flight: followers whose leader ended without settling them take
    its answer or are released. Only a bulk submission racing the leader's end leaves one so
    (and settles it itself, ``_followers_recheck``; a deleted leader clears ``follows`` by
    itself); the reaper runs this too, so that none waits forever whatever happens.
    Cheap: the partial index job_followers holds only followers.
    """
    if not (ids := _followers(leaders)):
        return 0
    stray = Q(pk__in=ids)
    completed = _followers_take_answers(stray & Q(follows__status=Status.SUCCEEDED), now=now)
    released = jobs_transition(
        "follower_release",
        where=stray & Q(follows__status__in=(Status.DEAD, Status.CANCELLED)),
        follows=None,
        available_at=now,
    )
    return completed + released
