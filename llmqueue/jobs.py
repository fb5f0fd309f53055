"""The job state machine: the only code that writes ``Job.status``.

    submit ──> queued ──claim──> running ──complete──> succeeded
                 ^  │               │
                 │  cancel          ├──retry_later──> queued   (backoff, Retry-After)
                 │  │               ├──release──────> queued   (its worker is shutting down)
                 │  v               ├──dead_letter──> dead     (refused, or attempts spent)
                 │ cancelled        └──reap─────────> queued | dead   (lease expired: worker died)
                 └───────retry─────── dead | cancelled

Every transition is a compare-and-set: an UPDATE guarded by the states it may start from
(and, for a running job, by the claim's lease token, so that a worker that lost its lease can
never overwrite the job's new life). A transition that matched no row raises TransitionError,
except in the drain's batch writes, where a lost fence is expected and simply skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from llmqueue import metrics
from llmqueue.backoff import backoff_delay
from llmqueue.breaker import CallOutcome
from llmqueue.conf import conf
from llmqueue.dispatch import Target, dispatch_pools
from llmqueue.errors import ModelNotServed, TransitionError
from llmqueue.models import Batch, Endpoint, Job, JobAttempt, Outcome, Status

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
    )


def job_submit(*, owner: Any, spec: JobSpec) -> tuple[Job, bool]:
    """Queue one job; returns (job, created).

    With an idempotency key that this owner used before, the existing job comes back with
    created=False and nothing new is queued. Raises ModelNotServed when no enabled endpoint
    serves the payload's model. The drains are woken once the transaction commits.
    """
    if spec.idempotency_key:
        existing = Job.objects.filter(owner=owner, idempotency_key=spec.idempotency_key).first()
        if existing is not None:
            return existing, False
    _check_served([spec.payload["model"]])
    try:
        with transaction.atomic():
            job = _new_job(owner=owner, spec=spec, batch=None, now=timezone.now())
            job.save()
            metrics.jobs_submitted([job.kind])
            _wake_on_commit()
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
    """
    _check_served({s.payload["model"] for s in specs})
    keys = [s.idempotency_key for s in specs if s.idempotency_key]
    existing = (
        {j.idempotency_key: j for j in Job.objects.filter(owner=owner, idempotency_key__in=keys)}
        if keys
        else {}
    )
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.create(owner=owner, name=name)
        fresh = [
            _new_job(owner=owner, spec=s, batch=batch, now=now)
            for s in specs
            if s.idempotency_key not in existing
        ]
        created = iter(Job.objects.bulk_create(fresh, batch_size=500))
        metrics.jobs_submitted(j.kind for j in fresh)
        jobs = [existing.get(s.idempotency_key) or next(created) for s in specs]
        _wake_on_commit()
    return batch, jobs


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
    """queued -> cancelled. Raises TransitionError from any other state."""
    _transition(job_id, "cancel", status=Status.CANCELLED, finished_at=timezone.now())
    metrics.jobs_finished(Status.CANCELLED)


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
    #: False when the request never reached the endpoint (connection refused): the job's
    #: attempt is given back, as the job is not at fault and the breaker will stop the calls
    spent: bool = True


def jobs_claim(*, limit: int, lease_s: float | None = None) -> list[Claim]:
    """queued -> running for up to ``limit`` due jobs, highest priority first, then oldest.

    Only jobs an endpoint can take now are claimed (``llmqueue.dispatch``: enabled, healthy,
    breaker allowing, under max_concurrency across the fleet), so a job never waits in a
    drain's hands while a later, more urgent one waits in the queue, and a job no endpoint
    can take waits without spending an attempt.
    Call inside ``transaction.atomic()``.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    lease_s = conf.LEASE_S if lease_s is None else lease_s
    pools = dispatch_pools(now=now)
    candidates: list[tuple[int, dt.datetime, int, str]] = []
    for model, room in pools.room().items():
        qs = Job.objects.filter(status=Status.QUEUED, model=model, available_at__lte=now).order_by(
            "-priority", "available_at", "id"
        )
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        candidates.extend(
            (-p, at, pk, model)
            for pk, p, at in qs.values_list("pk", "priority", "available_at")[: min(room, limit)]
        )
    candidates.sort()
    chosen: dict[int, list[int]] = defaultdict(list)
    targets: dict[int, Target] = {}
    order: list[int] = []
    for _, _, pk, model in candidates:
        if len(order) == limit:
            break
        seat = pools.assign(model)
        if seat is None:
            continue
        order.append(pk)
        chosen[seat.id].append(pk)
        targets[seat.id] = seat.target
    if not order:
        return []
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
        "pk", "kind", "payload", "attempts", "max_attempts", "endpoint_id"
    )
    claims = {
        pk: Claim(pk, token, kind, payload, attempts, max_attempts, targets[endpoint_id])
        for pk, kind, payload, attempts, max_attempts, endpoint_id in rows
    }
    return [claims[pk] for pk in order if pk in claims]  # in priority order


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
                status=Status.SUCCEEDED, result=r.body, error="", finished_at=now, **_RELEASE
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
    metrics.attempts_recorded(results, finished=finished)


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
        n = dead = 0
        for pk, attempts, max_attempts, _, _, token in rows:
            fence = Job.objects.filter(expired, pk=pk, lease_token=token)
            if attempts < max_attempts:
                n += fence.update(status=Status.QUEUED, available_at=now, **_RELEASE)
            else:
                dead += fence.update(
                    status=Status.DEAD,
                    error=f"gave up after {attempts} attempts; the last one's worker died",
                    finished_at=now,
                    **_RELEASE,
                )
        metrics.jobs_finished(Status.DEAD, dead)
    return n + dead


def queue_next_due() -> dt.datetime | None:
    """When the earliest queued job becomes claimable (None: the queue is empty)."""
    return (
        Job.objects.filter(status=Status.QUEUED)
        .order_by("available_at")
        .values_list("available_at", flat=True)
        .first()
    )
