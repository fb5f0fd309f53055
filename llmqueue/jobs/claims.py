"""The drain's transitions: claim, renew, record, release, reap."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from llmqueue import metrics
from llmqueue.cache import StoreItem
from llmqueue.calls.types import CallResult, Target
from llmqueue.conf import conf
from llmqueue.db.rows import db_param, placeholders, rows_insert, rows_read, rows_update
from llmqueue.endpoints.pools import Seat, dispatch_pools
from llmqueue.jobs.singleflight import followers_release, followers_rescue, leaders_settle
from llmqueue.jobs.transitions import ALLOWED, RELEASE_LEASE, may_start
from llmqueue.limits.ledger import (
    charges_tokens,
    dispatch_ledger,
    endpoint_charges,
    tokens_used,
    user_charges,
)
from llmqueue.models import Endpoint, Job, JobAttempt, Outcome, Status, status_literals
from llmqueue.policies.backoff import backoff_delay


@dataclasses.dataclass(frozen=True)
class Claim:
    job_id: int
    token: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    target: Target
    owner_id: int = 0
    #: the LLM tokens estimated before the call, and whether a tokens-per-minute limit was
    #: charged them (then its usage corrects the charge after the call)
    tokens_estimate: int = 0
    tokens_charged: bool = False
    #: its place in the queue's order, (-priority, fair_seq, id): a drain starts its claimed
    #: jobs in this order, so a later claim of a more urgent or fairer job goes first
    rank: tuple[int, int, int] = (0, 0, 0)
    model: str = ""
    #: where its answer goes in the response cache (None: uncached), and for how long at most
    cache_key: str | None = None
    cache_ttl: int | None = None
    #: seconds from its submission to its first claim (the queue wait, for the metrics)
    waited_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """One attempt of a claimed job: the claim, paired by the drain with its call's result."""

    claim: Claim
    call: CallResult


def lease_token(holder: str = "") -> str:
    """A claim's lease token: ``holder`` (a drain's tag, at most 16 characters) and random
    characters, 32 in all. ``jobs_reap(holders=...)`` finds a dead drain's claims by it."""
    if len(holder) > 16:
        raise ValueError(f"holder: {holder!r} is longer than 16 characters")
    return holder + secrets.token_hex(16)[: 32 - len(holder)]


def jobs_claim(*, limit: int, lease_s: float | None = None, holder: str = "") -> list[Claim]:
    """queued -> running for up to ``limit`` due jobs: highest priority first, then owners in
    turn (``llmqueue.jobs.fairness``), then oldest.

    Only jobs that can go now are claimed: an endpoint can take them (``llmqueue.endpoints.pools``:
    enabled, healthy, not paused, breaker allowing, under max_concurrency across the fleet)
    and they can pay their rate limits (``llmqueue.limits.ledger``). So a job never waits in a
    drain's hands while a later, more urgent one waits in the queue, and a job that cannot go
    waits in the queue without spending an attempt. Call inside ``transaction.atomic()``.
    ``holder``: the claiming drain's tag, the prefix of the lease token (``lease_token``).
    """
    if limit <= 0:
        return []
    now = timezone.now()
    lease_s = conf.LEASE_S if lease_s is None else lease_s
    pools = dispatch_pools(now=now)
    candidates: list[tuple[int, int, int, str, int, int, int | None]] = []
    due = db_param(Job, "available_at", now)
    for model, room in pools.room().items():
        # Twice what fits: some may be held back by their owner's limits.
        rows = rows_read(Job, _CANDIDATE, _candidates_sql(), [model, due, 2 * min(room, limit)])
        candidates.extend(
            (-p, seq, pk, model, owner, tokens, pin) for pk, p, seq, owner, tokens, pin in rows
        )
    if not candidates:
        return []
    candidates.sort()
    ledger = dispatch_ledger(
        endpoints=pools.endpoints(), owner_ids={c[4] for c in candidates}, now=now.timestamp()
    )
    chosen: dict[int, list[int]] = defaultdict(list)
    targets: dict[int, Target] = {}
    order: list[int] = []
    charged: set[int] = set()  # jobs charged to a tokens-per-minute bucket
    held: Counter[str] = Counter()  # jobs held back by a rate limit, by the bucket's scope
    rank = {c[2]: (c[0], c[1], c[2]) for c in candidates}
    for _, _, pk, model, owner, tokens, pin in candidates:
        if len(order) == limit:
            break
        charges = user_charges(ledger, owner, tokens)
        if scope := ledger.blocked_by(charges):
            held[scope] += 1
            continue
        blocked: list[str] = []

        def admit(s: Seat) -> bool:
            scope = ledger.blocked_by(charges + endpoint_charges(ledger, s.id, tokens))  # noqa: B023
            if scope:
                blocked.append(scope)  # noqa: B023
            return scope is None

        seat = pools.assign(model, only=pin, admit=admit)
        if seat is None:
            if blocked:
                held[blocked[0]] += 1
            continue
        paid = charges + endpoint_charges(ledger, seat.id, tokens)
        ledger.pay(paid)
        if charges_tokens(paid):
            charged.add(pk)
        order.append(pk)
        chosen[seat.id].append(pk)
        targets[seat.id] = seat.target
    for scope, n in held.items():
        metrics.rate_limit_wait(scope=scope, n=n)
    if not order:
        return []
    ledger.save()
    token = lease_token(holder)
    expires = db_param(Job, "lease_expires_at", now + dt.timedelta(seconds=lease_s))
    started = db_param(Job, "started_at", now)
    claims: dict[int, Claim] = {}
    for endpoint_id, ids in chosen.items():
        target = targets[endpoint_id]
        sql = _CLAIM_SQL.replace("{ids}", placeholders(ids))
        for row in rows_read(Job, _CLAIMED, sql, [endpoint_id, token, expires, started, *ids]):
            pk, kind, payload, attempts, max_attempts, owner, tokens, model, key, ttl, *at = row
            claims[pk] = Claim(
                job_id=pk,
                token=token,
                kind=kind,
                payload=payload,
                attempt=attempts,
                max_attempts=max_attempts,
                target=target,
                owner_id=owner,
                tokens_estimate=tokens,
                tokens_charged=pk in charged,
                rank=rank[pk],
                model=model,
                cache_key=key,
                cache_ttl=ttl,
                waited_s=(at[1] - at[0]).total_seconds(),
            )
    return [claims[pk] for pk in order if pk in claims]  # in the order they were chosen


# The claim's SQL, written once (``llmqueue.db.rows``): the step runs it every few milliseconds.
# The statuses are literals so that SQLite matches the partial index job_claim.
_CANDIDATE = ("id", "priority", "fair_seq", "owner", "tokens_estimate", "pinned_endpoint")
_CLAIMED = (
    "id",
    "kind",
    "payload",
    "attempts",
    "max_attempts",
    "owner",
    "tokens_estimate",
    "model",
    "cache_key",
    "cache_ttl",
    "created_at",
    "started_at",
)


_CLAIM_SQL = (
    f"UPDATE {{table}} SET status = {status_literals([Status.RUNNING])}, endpoint_id = %s, "
    "lease_token = %s, lease_expires_at = %s, attempts = attempts + 1, "
    "started_at = COALESCE(started_at, %s) "
    f"WHERE id IN ({{ids}}) AND status IN ({status_literals(ALLOWED['claim'])}) "
    "RETURNING {columns}"
)


def _candidates_sql() -> str:
    sql = (
        f"SELECT {{columns}} FROM {{table}} WHERE status = {status_literals([Status.QUEUED])} "
        "AND model = %s AND available_at <= %s AND follows_id IS NULL "
        "ORDER BY priority DESC, fair_seq, id LIMIT %s"
    )
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE SKIP LOCKED"
    return sql


def jobs_renew(*, tokens: Iterable[str], lease_s: float | None = None) -> int:
    """Extend the leases of the claims a live drain still holds."""
    tokens = list(set(tokens))
    if not tokens:
        return 0
    expires = timezone.now() + dt.timedelta(seconds=conf.LEASE_S if lease_s is None else lease_s)
    return Job.objects.filter(status=Status.RUNNING, lease_token__in=tokens).update(
        lease_expires_at=expires
    )


def _retry_delay(attempt: int, r: AttemptResult) -> float:
    return backoff_delay(
        attempt=attempt,
        base=conf.BACKOFF_BASE_S,
        cap=conf.BACKOFF_CAP_S,
        retry_after=r.call.retry_after,
        retry_after_cap=conf.RETRY_AFTER_CAP_S,
    )


_ATTEMPT_FIELDS = (
    "job",
    "number",
    "endpoint",
    "endpoint_name",
    "started_at",
    "duration_ms",
    "http_status",
    "outcome",
    "error",
)
_SUCCEED_SET = (
    "status",
    "result",
    "error",
    "finished_at",
    "tokens_used",
    "lease_token",
    "lease_expires_at",
)


def jobs_record(results: Sequence[AttemptResult]) -> None:
    """Write calls' outcomes: an attempt row each, and the job's next state.

    running -> succeeded | queued (retry later) | dead. Each update is fenced by the claim's
    lease token: a result from a drain that lost its lease changes nothing but the attempt log.
    Call inside ``transaction.atomic()``.
    """
    if not results:
        return
    now = timezone.now()
    rows_insert(
        JobAttempt,
        _ATTEMPT_FIELDS,
        (
            (
                r.claim.job_id,
                r.claim.attempt,
                r.claim.target.id,
                r.claim.target.name,
                r.call.started_at,
                r.call.duration_ms,
                r.call.http_status,
                r.call.outcome.value,
                r.call.error[:4000],
            )
            for r in results
        ),
    )
    won = _succeed_many([r for r in results if r.call.outcome == Outcome.SUCCESS], now=now)
    dead: list[int] = []  # the jobs whose last transition won its fence
    for r in results:
        if r.call.outcome == Outcome.SUCCESS:
            continue
        c = r.claim
        fence = Job.objects.filter(pk=c.job_id, status=Status.RUNNING, lease_token=c.token)
        if r.call.outcome == Outcome.RETRY and not r.call.spent:
            fence.update(
                status=Status.QUEUED,
                error=r.call.error,
                attempts=F("attempts") - 1,
                available_at=now + dt.timedelta(seconds=_retry_delay(c.attempt, r)),
                **RELEASE_LEASE,
            )
        elif r.call.outcome == Outcome.RETRY and c.attempt < c.max_attempts:
            fence.update(
                status=Status.QUEUED,
                error=r.call.error,
                available_at=now + dt.timedelta(seconds=_retry_delay(c.attempt, r)),
                **RELEASE_LEASE,
            )
        else:
            error = r.call.error
            if r.call.outcome == Outcome.RETRY:
                error = f"gave up after {c.attempt} attempts; last error: {r.call.error}"
            if fence.update(status=Status.DEAD, error=error, finished_at=now, **RELEASE_LEASE):
                dead.append(c.job_id)
    leaders_settle(
        {r.claim.job_id: r.call.body for r in won},
        store=[
            StoreItem(
                key=r.claim.cache_key,
                kind=r.claim.kind,
                model=r.claim.model,
                response=r.call.body,
                ttl_s=r.claim.cache_ttl,
            )
            for r in won
            # a 2xx without a JSON body: nothing to serve again
            if r.claim.cache_key and r.call.body is not None
        ],
        ended=dead,
        now=now,
    )
    finished = {r.claim.job_id: Status.SUCCEEDED for r in won}
    finished.update(dict.fromkeys(dead, Status.DEAD))
    metrics.attempts_recorded(
        [r.call for r in results],
        waits=[r.claim.waited_s for r in results if r.claim.job_id in finished],
        finished=finished.values(),
    )


def _succeed_many(results: Sequence[AttemptResult], *, now: dt.datetime) -> list[AttemptResult]:
    """running -> succeeded for many jobs at once; returns the results whose fence held.

    The hot path of every drain step, so one statement run for all rows (``llmqueue.db.rows``),
    each row fenced by its lease in the WHERE clause. Nearly always every fence holds, which
    the count of changed rows tells; when one did not (its lease was lost), the writes are
    undone and redone for the jobs whose fence is read to hold, under lock (PostgreSQL:
    FOR UPDATE; SQLite: the step's IMMEDIATE transaction).
    """
    if not results:
        return []
    with contextlib.suppress(_FenceLost), transaction.atomic():
        if _succeed_rows(results, now=now) != len(results):
            raise _FenceLost  # rolls back to the savepoint
        return list(results)
    fenced = Job.objects.filter(
        pk__in=[r.claim.job_id for r in results],
        status=Status.RUNNING,
        lease_token__in={r.claim.token for r in results},
    ).order_by()
    held = set(fenced.select_for_update().values_list("pk", "lease_token"))
    won = [r for r in results if (r.claim.job_id, r.claim.token) in held]
    _succeed_rows(won, now=now)
    return won


class _FenceLost(Exception):
    pass


def _succeed_rows(results: Sequence[AttemptResult], *, now: dt.datetime) -> int:
    return rows_update(
        Job,
        assign=_SUCCEED_SET,
        where=("id", "status", "lease_token"),
        rows=(
            (
                Status.SUCCEEDED.value,
                r.call.body,
                "",
                now,
                tokens_used(r.call.body),
                None,
                None,
                r.claim.job_id,
                Status.RUNNING.value,
                r.claim.token,
            )
            for r in results
        ),
    )


def jobs_release(*, claims: Iterable[Claim]) -> int:
    """running -> queued at once, the attempt given back: for calls a stopping drain cut off.

    The upstream may have seen the call; the answer was never read, so the job runs again.
    """
    n = 0
    now = timezone.now()
    with transaction.atomic():
        for c in claims:
            n += Job.objects.filter(may_start("release"), pk=c.job_id, lease_token=c.token).update(
                status=Status.QUEUED, attempts=F("attempts") - 1, available_at=now, **RELEASE_LEASE
            )
    return n


def jobs_reap(*, limit: int = 500, holders: Collection[str] = ()) -> int:
    """running jobs whose lease expired (their worker died or stalled) -> queued, or dead if
    that was their last attempt. The lost call is logged as an attempt. Returns how many.

    ``holders``: instead, the jobs claimed by these drains (lease tokens starting with their
    tags), lease or no lease: drains known to be dead (``llmqueue.worker.slots``), whose
    claims need not wait for their leases to lapse.
    """
    now = timezone.now()
    if holders:
        held = Q(pk__in=[])
        for tag in holders:
            if not tag:
                raise ValueError("holders: an empty tag would match every claim")
            held |= Q(lease_token__startswith=tag)
        expired = may_start("reap") & held
        why = "its worker died mid-call (its process is gone)"
    else:
        expired = may_start("reap") & Q(lease_expires_at__lt=now)
        why = "lease expired: the worker died or stalled mid-call"
    with transaction.atomic():
        followers_rescue(now=now)
        # In job_running's order: SQLite then walks that partial index (the running jobs),
        # where the model's default order (-id) made it walk the whole table.
        rows = list(
            Job.objects.filter(expired)
            .order_by("endpoint_id", "lease_expires_at")
            .values_list(
                "pk", "attempts", "max_attempts", "endpoint_id", "started_at", "lease_token"
            )[:limit]
        )
        if not rows:
            return 0
        names = dict(Endpoint.objects.values_list("id", "name"))
        JobAttempt.objects.bulk_create(
            JobAttempt(
                job_id=pk,
                number=attempts,
                endpoint_id=endpoint_id,
                endpoint_name=names.get(endpoint_id, ""),
                started_at=started_at or now,
                outcome=Outcome.LOST,
                error=why,
            )
            for pk, attempts, _, endpoint_id, started_at, _ in rows
        )
        metrics.attempts_lost(names.get(row[3], "") for row in rows)
        n = 0
        ended: list[int] = []
        for pk, attempts, max_attempts, _, _, token in rows:
            fence = Job.objects.filter(expired, pk=pk, lease_token=token)
            if attempts < max_attempts:
                n += fence.update(status=Status.QUEUED, available_at=now, **RELEASE_LEASE)
            elif fence.update(
                status=Status.DEAD,
                error=f"gave up after {attempts} attempts; the last one's worker died",
                finished_at=now,
                **RELEASE_LEASE,
            ):
                ended.append(pk)
        followers_release(ended, now=now)
        dead = len(ended)
        metrics.jobs_finished(Status.DEAD, dead)
    return n + dead


def attempt_usages(results: Iterable[AttemptResult]) -> list[tuple[int, int, int, int]]:
    """The token usage of finished calls whose claim charged a tokens-per-minute bucket, for
    ``limits.ledger.buckets_reconcile``: (endpoint id, owner id, estimated, used)."""
    usages = []
    for r in results:
        used = tokens_used(r.call.body) if r.claim.tokens_charged else None
        if used is not None:
            c = r.claim
            usages.append((c.target.id, c.owner_id, c.tokens_estimate, used))
    return usages


def queue_has_due() -> bool:
    """Whether any queued job is due now (a cheap read, for idle polls)."""
    return Job.objects.filter(
        status=Status.QUEUED, available_at__lte=timezone.now(), follows__isnull=True
    ).exists()


def queue_due_count(now: dt.datetime) -> int:
    """How many queued jobs are due (followers too: they wait for nothing but their leader).
    The status is a literal: SQLite then counts from job_next_due alone (~30 ms at 300,000
    due, against ~140 ms with the status as a parameter, which it checks in every row)."""
    sql = (
        f"SELECT COUNT(*) FROM {{table}} WHERE status = {status_literals([Status.QUEUED])} "
        "AND available_at <= %s"
    )
    ((n,),) = rows_read(Job, (), sql, [db_param(Job, "available_at", now)])
    return int(n)


def queue_next_due() -> dt.datetime | None:
    """When the earliest queued job becomes claimable (None: the queue is empty)."""
    return (
        Job.objects.filter(status=Status.QUEUED, follows__isnull=True)
        .order_by("available_at")
        .values_list("available_at", flat=True)
        .first()
    )
