"""The job state machine: the only code that writes ``Job.status``.

    submit ──> queued ──claim──> running ──complete──> succeeded
                 ^  │               │
                 │  cancel          ├──retry_later──> queued   (backoff, Retry-After)
                 │  │               ├──release──────> queued   (its worker is shutting down)
                 │  v               ├──dead_letter──> dead     (refused, or attempts spent)
                 │ cancelled        └──reap─────────> queued | dead   (lease expired: worker died)
                 └───────retry─────── dead | cancelled
    submit ──(cached answer)──> succeeded                    (cache_hit; llmqueue.cache)
    queued follower ──its leader succeeded──> succeeded      (cache_hit: single-flight)

A cacheable job whose twin (same cache key) is queued or running *follows* it: never claimed,
it finishes with its leader's answer in the leader's own transition, or is released
(``follows`` cleared) to run on its own when the leader ends any other way.

Every transition is a compare-and-set: an UPDATE guarded by the states it may start from
(and, for a running job, by the claim's lease token, so that a worker that lost its lease can
never overwrite the job's new life). A transition that matched no row raises TransitionError,
except in the drain's batch writes, where a lost fence is expected and simply skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from llmqueue import metrics
from llmqueue.backoff import backoff_delay
from llmqueue.breaker import CallOutcome
from llmqueue.buckets import estimate_tokens
from llmqueue.cache import (
    CachedAnswer,
    StoreItem,
    cache_confirm,
    cache_key_for,
    cache_lookup_db,
    cache_lookup_many,
    cache_store_many,
)
from llmqueue.cache import metrics as cache_metrics
from llmqueue.conf import conf
from llmqueue.dispatch import Seat, Target, dispatch_pools
from llmqueue.errors import ModelNotServed, TransitionError
from llmqueue.fairness import fair_seqs_assign
from llmqueue.locking import writer_turn
from llmqueue.models import Batch, Endpoint, Job, JobAttempt, Outcome, Status
from llmqueue.ratelimit import (
    dispatch_ledger,
    endpoint_charges,
    submission_admit,
    tokens_used,
    user_charges,
)

#: which states each transition may start from
ALLOWED: dict[str, tuple[Status, ...]] = {
    "claim": (Status.QUEUED,),
    "complete": (Status.RUNNING,),
    "retry_later": (Status.RUNNING,),
    "dead_letter": (Status.RUNNING,),
    "reap": (Status.RUNNING,),
    "release": (Status.RUNNING,),
    "cancel": (Status.QUEUED,),
    "retry": (Status.DEAD, Status.CANCELLED),
    #: a single-flight follower takes its leader's answer (or is released to run alone)
    "follow_through": (Status.QUEUED,),
}

_RELEASE = {"lease_token": None, "lease_expires_at": None}


# --- submission ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated request to run one job (the API, forms and bulk build these)."""

    kind: str
    payload: dict[str, Any]
    priority: int = 5
    max_attempts: int | None = None
    idempotency_key: str | None = None
    cache: bool = True
    #: the caller's own id (a JSONL batch line's custom_id), echoed in batch results
    custom_id: str = ""
    #: accept only a cached answer younger than this, and keep this job's no longer, seconds
    cache_ttl: int | None = None


def served_models() -> list[str]:
    """Every model some enabled endpoint serves, sorted."""
    served: set[str] = set()
    for names in Endpoint.objects.filter(enabled=True).values_list("served_models", flat=True):
        served.update(n for n in names or () if isinstance(n, str))
    return sorted(served)


def _check_served(models: Iterable[str]) -> None:
    served = served_models()
    for model in models:
        if model not in served:
            raise ModelNotServed(model, served)


def _new_job(*, owner: Any, spec: JobSpec, batch: Batch | None, now: dt.datetime) -> Job:
    return Job(
        owner=owner,
        batch=batch,
        kind=spec.kind,
        model=spec.payload["model"],
        payload=spec.payload,
        priority=spec.priority,
        max_attempts=spec.max_attempts or conf.MAX_ATTEMPTS,
        idempotency_key=spec.idempotency_key,
        cache=spec.cache,
        created_at=now,
        available_at=now,
        custom_id=spec.custom_id,
        tokens_estimate=estimate_tokens(spec.kind, spec.payload),
        cache_key=cache_key_for(
            owner_id=owner.pk, kind=spec.kind, payload=spec.payload, cache=spec.cache
        ),
        cache_ttl=spec.cache_ttl,
    )


def job_submit(*, owner: Any, spec: JobSpec) -> tuple[Job, bool]:
    """Queue one job; returns (job, created).

    With an idempotency key that this owner used before, the existing job comes back with
    created=False and nothing new is queued. Raises ModelNotServed when no enabled endpoint
    serves the payload's model. A cacheable job whose answer is cached comes back already
    succeeded (``cache_hit``), and one whose twin is in flight follows it (see the module
    docstring). The drains are woken once the transaction commits, if the job needs one.
    """
    if spec.idempotency_key:
        existing = Job.objects.filter(owner=owner, idempotency_key=spec.idempotency_key).first()
        if existing is not None:
            return existing, False
    _check_served([spec.payload["model"]])
    now = timezone.now()
    job = _new_job(owner=owner, spec=spec, batch=None, now=now)
    wanted = _cache_wanted([job])
    found = cache_lookup_many(wanted, now=now) if wanted else {}  # before locking anything
    try:
        with transaction.atomic():
            _admit(owner, [job])
            if wanted:
                _by_cache([job], wanted, found, now=now, single=True)
            job.save()
            _after_submit([job])
    except IntegrityError:
        # Two requests with the same key raced; the other one's insert won.
        if not spec.idempotency_key:
            raise
        return Job.objects.get(owner=owner, idempotency_key=spec.idempotency_key), False
    return job, True


def jobs_submit_many(
    *, owner: Any, specs: Sequence[JobSpec], name: str = ""
) -> tuple[Batch, list[Job]]:
    """Queue many jobs as one Batch: all of them, or (on any error) none.

    Specs whose idempotency key this owner already used return the existing job instead.
    Cache hits and single-flight work as in ``job_submit``; identical specs of one batch
    follow the first of them.
    """
    _check_served({s.payload["model"] for s in specs})
    keys = [s.idempotency_key for s in specs if s.idempotency_key]
    existing = (
        {j.idempotency_key: j for j in Job.objects.filter(owner=owner, idempotency_key__in=keys)}
        if keys
        else {}
    )
    now = timezone.now()
    fresh = [
        _new_job(owner=owner, spec=s, batch=None, now=now)
        for s in specs
        if s.idempotency_key not in existing
    ]
    wanted = _cache_wanted(fresh)
    found = cache_lookup_many(wanted, now=now) if wanted else {}  # before locking anything
    with writer_turn(), transaction.atomic():
        _admit(owner, fresh)
        batch = Batch.objects.create(owner=owner, name=name)
        for job in fresh:
            job.batch = batch
        twins = _by_cache(fresh, wanted, found, now=now, single=False) if wanted else []
        # Leaders first: a twin of this batch needs its leader's id.
        waiting = {id(follower) for follower, _ in twins}
        Job.objects.bulk_create([j for j in fresh if id(j) not in waiting], batch_size=500)
        for follower, leader in twins:
            follower.follows_id = leader.pk
        Job.objects.bulk_create([f for f, _ in twins], batch_size=500)
        _after_submit(fresh)
    created = iter(fresh)
    jobs = [existing.get(s.idempotency_key) or next(created) for s in specs]
    return batch, jobs


def _admit(owner: Any, jobs: list[Job]) -> None:
    """Charge the submission to its owner's limits (or raise OverLimit) and place its jobs in
    their owner's line. Inside the submitting transaction: a refusal writes nothing."""
    submission_admit(owner=owner, jobs=len(jobs), tokens=sum(j.tokens_estimate for j in jobs))
    fair_seqs_assign(owner=owner, jobs=jobs)


def _cache_wanted(jobs: Iterable[Job]) -> dict[str, int | None]:
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


def _by_cache(
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
    in_flight = Job.objects.filter(
        status__in=(Status.QUEUED, Status.RUNNING), follows__isnull=True
    ).order_by("id")
    if single:
        first = (
            in_flight.filter(cache_key=keys[0])
            .select_for_update(of=("self",))
            .values_list("pk", flat=True)
            .first()
        )
        return {keys[0]: first} if first is not None else {}
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        rows = (
            in_flight.filter(cache_key__in=keys[start : start + 500])
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", "cache_key")
        )
        for pk, key in rows:
            found.setdefault(key, pk)
    rest = [k for k in keys if k not in found]
    if rest and connection.features.has_select_for_update_skip_locked:
        finishing: set[int] = set()
        for start in range(0, len(rest), 500):
            rows = in_flight.filter(cache_key__in=rest[start : start + 500]).values_list(
                "pk", "cache_key", "status"
            )
            for pk, key, status in rows:
                # A queued leader's lock is a claim's, which makes it run, not end: no need to
                # check on it. A running one's may be its answer being recorded.
                if found.setdefault(key, pk) == pk and status == Status.RUNNING:
                    finishing.add(pk)
        if finishing:
            transaction.on_commit(lambda: _followers_recheck(sorted(finishing)), robust=True)
    return found


def _followers_recheck(leader_ids: list[int]) -> None:
    """After a commit that added followers to leaders it could not lock: wait for each leader's
    lock in turn (one row per transaction: nothing to deadlock on), then settle the followers
    it left behind, had it finished meanwhile without seeing them."""
    for leader_id in leader_ids:
        with transaction.atomic():
            Job.objects.select_for_update().filter(pk=leader_id).values_list("pk").first()
            _followers_rescue(now=timezone.now(), leaders=[leader_id])


def _twins_take_turns(key: str) -> None:
    """PostgreSQL: identical single submissions take turns, under a transaction-scoped advisory
    lock on their key, so that two of them never both find no leader and both lead. (SQLite's
    IMMEDIATE transactions already take turns. Bulk submissions do not lock keys: a race of
    two of them, rare, costs at worst one more upstream call.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # 64 bits of the key's sha256, as the signed bigint the lock takes
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(key[-16:], 16) - (1 << 63)])


def _after_submit(jobs: list[Job]) -> None:
    metrics.jobs_submitted(j.kind for j in jobs)
    hits = sum(1 for j in jobs if j.cache_hit)
    followers = sum(1 for j in jobs if j.follows_id is not None)
    metrics.jobs_finished(Status.SUCCEEDED, hits)
    if followers:
        transaction.on_commit(lambda: cache_metrics.FOLLOWERS.inc(followers))
    # A hit needs no drain, and a follower waits for its leader's.
    if any(j.status == Status.QUEUED and j.follows_id is None for j in jobs):
        _wake_on_commit()


def _wake_on_commit() -> None:
    from llmqueue.drain import drain_wake

    transaction.on_commit(drain_wake)


# --- operator and owner transitions ------------------------------------------------------------


def _transition(job_id: int, action: str, extra: Q | None = None, **values: Any) -> None:
    guard = Q(pk=job_id, status__in=ALLOWED[action])
    if extra is not None:
        guard &= extra
    if Job.objects.filter(guard).update(**values) != 1:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        raise TransitionError(job_id, action, status)


def job_cancel(*, job_id: int) -> None:
    """queued -> cancelled. Raises TransitionError from any other state.

    The job's single-flight followers, if it led any, are released to run on their own.
    """
    now = timezone.now()
    with transaction.atomic():
        _transition(job_id, "cancel", status=Status.CANCELLED, finished_at=now)
        if _followers_release([job_id], now=now):
            _wake_on_commit()
    metrics.jobs_finished(Status.CANCELLED)


def _followers_release(leader_ids: list[int], *, now: dt.datetime) -> int:
    """The queued followers of leaders that ended without an answer: each runs on its own."""
    if not leader_ids:
        return 0
    return Job.objects.filter(
        follows_id__in=leader_ids, status__in=ALLOWED["follow_through"]
    ).update(follows=None, available_at=now)


def job_retry(*, job_id: int) -> None:
    """dead | cancelled -> queued, with its attempts reset. Raises TransitionError otherwise."""
    now = timezone.now()
    with transaction.atomic():
        _transition(
            job_id,
            "retry",
            status=Status.QUEUED,
            attempts=0,
            error="",
            result=None,
            available_at=now,
            finished_at=None,
            pinned_endpoint=None,
            follows=None,  # a retried follower runs on its own
            **_RELEASE,
        )
        _wake_on_commit()


def jobs_retry(*, job_ids: Iterable[int], endpoint_id: int | None = None) -> int:
    """job_retry for many; returns how many were requeued (the others were not dead/cancelled).

    With ``endpoint_id`` the jobs are pinned to that endpoint (the claim gives them to it and
    no other), and only those whose model it serves are requeued. Without, any pin is cleared.
    """
    now = timezone.now()
    requeue = Job.objects.filter(pk__in=list(job_ids), status__in=ALLOWED["retry"])
    if endpoint_id is not None:
        served = Endpoint.objects.filter(pk=endpoint_id).values_list("served_models", flat=True)
        requeue = requeue.filter(model__in=served.first() or [])
    with transaction.atomic():
        n = requeue.update(
            status=Status.QUEUED,
            attempts=0,
            error="",
            result=None,
            available_at=now,
            finished_at=None,
            pinned_endpoint_id=endpoint_id,
            follows=None,
            **_RELEASE,
        )
        if n:
            _wake_on_commit()
    return n


# --- the drain's transitions ---------------------------------------------------------------------


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
    #: the LLM tokens charged to rate limits before the call (reconciled after it)
    tokens_estimate: int = 0


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """The outcome of one upstream call, as ``llmqueue.upstream`` classified it."""

    claim: Claim
    started_at: dt.datetime
    duration_ms: float
    outcome: Outcome
    http_status: int | None = None
    body: Any = None
    error: str = ""
    retry_after: float | None = None
    #: what the call says about the endpoint (its breaker's input); None: nothing
    health: CallOutcome | None = None
    #: False when the job is not at fault and the endpoint will be held back instead: the
    #: request never reached it (connection refused; its breaker stops the calls), or it
    #: said 429 (it is paused): the job's attempt is given back
    spent: bool = True
    #: pause the endpoint this long (a 429's Retry-After, or rate-limit headers at zero)
    pause_s: float | None = None


def jobs_claim(*, limit: int, lease_s: float | None = None) -> list[Claim]:
    """queued -> running for up to ``limit`` due jobs: highest priority first, then owners in
    turn (``llmqueue.fairness``), then oldest.

    Only jobs that can go now are claimed: an endpoint can take them (``llmqueue.dispatch``:
    enabled, healthy, not paused, breaker allowing, under max_concurrency across the fleet)
    and they can pay their rate limits (``llmqueue.ratelimit``). So a job never waits in a
    drain's hands while a later, more urgent one waits in the queue, and a job that cannot go
    waits in the queue without spending an attempt. Call inside ``transaction.atomic()``.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    lease_s = conf.LEASE_S if lease_s is None else lease_s
    pools = dispatch_pools(now=now)
    candidates: list[tuple[int, int, int, str, int, int, int | None]] = []
    for model, room in pools.room().items():
        qs = Job.objects.filter(
            status=Status.QUEUED, model=model, available_at__lte=now, follows__isnull=True
        ).order_by("-priority", "fair_seq", "id")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        # Twice what fits: some may be held back by their owner's limits.
        fields = ("pk", "priority", "fair_seq", "owner_id", "tokens_estimate", "pinned_endpoint_id")
        candidates.extend(
            (-p, seq, pk, model, owner, tokens, pin)
            for pk, p, seq, owner, tokens, pin in qs.values_list(*fields)[: 2 * min(room, limit)]
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
    held: Counter[str] = Counter()  # jobs held back by a rate limit, by the bucket's scope
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
        ledger.pay(charges + endpoint_charges(ledger, seat.id, tokens))
        order.append(pk)
        chosen[seat.id].append(pk)
        targets[seat.id] = seat.target
    for scope, n in held.items():
        metrics.rate_limit_wait(scope=scope, n=n)
    if not order:
        return []
    ledger.save()
    token = secrets.token_hex(16)
    expires = now + dt.timedelta(seconds=lease_s)
    for endpoint_id, ids in chosen.items():
        Job.objects.filter(pk__in=ids, status__in=ALLOWED["claim"]).update(
            status=Status.RUNNING,
            endpoint_id=endpoint_id,
            lease_token=token,
            lease_expires_at=expires,
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
        )
    rows = Job.objects.filter(lease_token=token, status=Status.RUNNING).values_list(
        "pk",
        "kind",
        "payload",
        "attempts",
        "max_attempts",
        "endpoint_id",
        "owner_id",
        "tokens_estimate",
    )
    claims = {
        pk: Claim(pk, token, kind, payload, attempts, max_attempts, targets[ep], owner, tokens)
        for pk, kind, payload, attempts, max_attempts, ep, owner, tokens in rows
    }
    return [claims[pk] for pk in order if pk in claims]  # in the order they were chosen


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
        retry_after=r.retry_after,
        retry_after_cap=conf.RETRY_AFTER_CAP_S,
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
    JobAttempt.objects.bulk_create(
        JobAttempt(
            job_id=r.claim.job_id,
            number=r.claim.attempt,
            endpoint_id=r.claim.target.id,
            endpoint_name=r.claim.target.name,
            started_at=r.started_at,
            duration_ms=r.duration_ms,
            http_status=r.http_status,
            outcome=r.outcome,
            error=r.error[:4000],
        )
        for r in results
    )
    finished: dict[int, str] = {}  # the jobs whose terminal transition won its fence
    for r in results:
        c = r.claim
        fence = Job.objects.filter(pk=c.job_id, status=Status.RUNNING, lease_token=c.token)
        if r.outcome == Outcome.SUCCESS:
            if fence.update(
                status=Status.SUCCEEDED,
                result=r.body,
                error="",
                finished_at=now,
                tokens_used=tokens_used(r.body),
                **_RELEASE,
            ):
                finished[c.job_id] = Status.SUCCEEDED
        elif r.outcome == Outcome.RETRY and not r.spent:
            fence.update(
                status=Status.QUEUED,
                error=r.error,
                attempts=F("attempts") - 1,
                available_at=now + dt.timedelta(seconds=_retry_delay(c.attempt, r)),
                **_RELEASE,
            )
        elif r.outcome == Outcome.RETRY and c.attempt < c.max_attempts:
            fence.update(
                status=Status.QUEUED,
                error=r.error,
                available_at=now + dt.timedelta(seconds=_retry_delay(c.attempt, r)),
                **_RELEASE,
            )
        else:
            error = r.error
            if r.outcome == Outcome.RETRY:
                error = f"gave up after {c.attempt} attempts; last error: {r.error}"
            if fence.update(status=Status.DEAD, error=error, finished_at=now, **_RELEASE):
                finished[c.job_id] = Status.DEAD
    _leaders_settle(
        {r.claim.job_id: r.body for r in results if finished.get(r.claim.job_id) == "succeeded"},
        ended=[pk for pk, status in finished.items() if status == Status.DEAD],
        now=now,
    )
    metrics.attempts_recorded(results, finished=finished)


def _leaders_settle(answers: dict[int, Any], *, ended: list[int], now: dt.datetime) -> None:
    """After a record step: the jobs that succeeded (``answers``: id -> body) complete their
    followers (queued -> succeeded, cache_hit) and the cacheable ones write their answers to
    the cache; the ``ended`` (dead) ones release their followers. Three statements per step
    at most, however many jobs: a SELECT, an UPDATE of the followers and an upsert.
    """
    if answers:
        _followers_take_answers(Job.objects.filter(follows_id__in=list(answers)), now=now)
        rows = Job.objects.filter(pk__in=list(answers), cache_key__isnull=False).values_list(
            "pk", "cache_key", "cache_ttl", "model", "kind"
        )
        cache_store_many(
            [
                StoreItem(key=key, kind=kind, model=model, response=answers[pk], ttl_s=ttl)
                for pk, key, ttl, model, kind in rows
                if answers[pk] is not None  # a 2xx without a JSON body: nothing to serve again
            ],
            now=now,
        )
    _followers_release(ended, now=now)


def _followers_take_answers(followers: QuerySet[Job], *, now: dt.datetime) -> int:
    """queued followers -> succeeded with their leader's answer, in one UPDATE (the answer is
    read from the leader's row, written earlier in the same transaction)."""
    answer = Job.objects.filter(pk=OuterRef("follows_id")).values("result")[:1]
    n = followers.filter(status__in=ALLOWED["follow_through"]).update(
        status=Status.SUCCEEDED,
        result=Subquery(answer),
        cache_hit=True,
        error="",
        started_at=now,
        finished_at=now,
    )
    metrics.jobs_finished(Status.SUCCEEDED, n)
    return n


def _followers_rescue(*, now: dt.datetime, leaders: list[int] | None = None) -> int:
    """The net under single-flight: followers whose leader ended without settling them take
    its answer or are released. Only a bulk submission racing the leader's end leaves one so
    (and settles it itself, ``_followers_recheck``; a deleted leader clears ``follows`` by
    itself); the reaper runs this too, so that none waits forever whatever happens.
    Cheap: the partial index job_followers holds only followers.
    """
    stray = Job.objects.filter(status__in=ALLOWED["follow_through"], follows__isnull=False)
    if leaders is not None:
        stray = stray.filter(follows_id__in=leaders)
    completed = _followers_take_answers(stray.filter(follows__status=Status.SUCCEEDED), now=now)
    released = stray.filter(follows__status__in=(Status.DEAD, Status.CANCELLED)).update(
        follows=None, available_at=now
    )
    return completed + released


def jobs_release(*, claims: Iterable[Claim]) -> int:
    """running -> queued at once, the attempt given back: for calls a stopping drain cut off.

    The upstream may have seen the call; the answer was never read, so the job runs again.
    """
    n = 0
    now = timezone.now()
    with transaction.atomic():
        for c in claims:
            n += Job.objects.filter(
                pk=c.job_id, status__in=ALLOWED["release"], lease_token=c.token
            ).update(status=Status.QUEUED, attempts=F("attempts") - 1, available_at=now, **_RELEASE)
    return n


def jobs_reap(*, limit: int = 500) -> int:
    """running jobs whose lease expired (their worker died or stalled) -> queued, or dead if
    that was their last attempt. The lost call is logged as an attempt. Returns how many."""
    now = timezone.now()
    expired = Q(status__in=ALLOWED["reap"], lease_expires_at__lt=now)
    with transaction.atomic():
        _followers_rescue(now=now)
        rows = list(
            Job.objects.filter(expired).values_list(
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
                error="lease expired: the worker died or stalled mid-call",
            )
            for pk, attempts, _, endpoint_id, started_at, _ in rows
        )
        metrics.attempts_lost(names.get(row[3], "") for row in rows)
        n = 0
        ended: list[int] = []
        for pk, attempts, max_attempts, _, _, token in rows:
            fence = Job.objects.filter(expired, pk=pk, lease_token=token)
            if attempts < max_attempts:
                n += fence.update(status=Status.QUEUED, available_at=now, **_RELEASE)
            elif fence.update(
                status=Status.DEAD,
                error=f"gave up after {attempts} attempts; the last one's worker died",
                finished_at=now,
                **_RELEASE,
            ):
                ended.append(pk)
        _followers_release(ended, now=now)
        dead = len(ended)
        metrics.jobs_finished(Status.DEAD, dead)
    return n + dead


def queue_has_due() -> bool:
    """Whether any queued job is due now (a cheap read, for idle polls)."""
    return Job.objects.filter(
        status=Status.QUEUED, available_at__lte=timezone.now(), follows__isnull=True
    ).exists()


def queue_next_due() -> dt.datetime | None:
    """When the earliest queued job becomes claimable (None: the queue is empty)."""
    return (
        Job.objects.filter(status=Status.QUEUED, follows__isnull=True)
        .order_by("available_at")
        .values_list("available_at", flat=True)
        .first()
    )
