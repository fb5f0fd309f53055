"""The drain's transitions: claim (the scheduler's plan), renew, record, release, reap."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from django.db.models import F
from django.utils import timezone

from llmqueue import metrics
from llmqueue.cache import StoreItem
from llmqueue.calls.types import CallResult, Target
from llmqueue.conf import conf
from llmqueue.db.rows import db_param, rows_insert, rows_update
from llmqueue.jobs.singleflight import leaders_settle
from llmqueue.jobs.transitions import (
    Completion,
    claims_write,
    job_transition,
    jobs_complete,
)
from llmqueue.limits.ledger import (
    tokens_used,
)
from llmqueue.models import Job, JobAttempt, Outcome, Status
from llmqueue.policies.retry import BackoffSettings, retry_decide


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
    #: claimed with a place of its endpoint's max_concurrency; False: it waits behind the
    #: endpoint, to take a place its drain's own call there frees (``claims_seat``)
    seated: bool = True


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """One attempt of a claimed job: the claim, paired by the drain with its call's result."""

    claim: Claim
    call: CallResult


class Assignment(NamedTuple):
    """One job of the scheduler's plan (``llmqueue.worker.scheduler``), and where it goes."""

    job_id: int
    endpoint_id: int
    target: Target
    #: its place in the queue's order, (-priority, fair_seq, id)
    rank: tuple[int, int, int]
    #: whether a tokens-per-minute bucket was charged for it (its usage corrects the charge)
    tokens_charged: bool
    #: with a place of the endpoint's room (False: behind it, ``Seat.behind``)
    seated: bool = True


def lease_token(holder: str = "") -> str:
    """A claim's lease token: ``holder`` (a drain's tag, at most 16 characters) and random
    characters, 32 in all. ``jobs_reap(holders=...)`` finds a dead drain's claims by it."""
    if len(holder) > 16:
        raise ValueError(f"holder: {holder!r} is longer than 16 characters")
    return holder + secrets.token_hex(16)[: 32 - len(holder)]


def jobs_claim_planned(
    *,
    plan: Sequence[Assignment],
    now: dt.datetime,
    lease_s: float | None = None,
    holder: str = "",
) -> list[Claim]:
    """queued -> running for the jobs of the scheduler's ``plan``, each to its endpoint, under
    one lease; returns their claims in the plan's order (a job no longer queued is skipped).
    Call inside the transaction that made the plan."""
    if not plan:
        return []
    lease_s = conf.LEASE_S if lease_s is None else lease_s
    token = lease_token(holder)
    # A job claimed behind its endpoint is written to it only when it takes a place there
    # (``claims_seat``): until then it counts against no endpoint's max_concurrency.
    chosen: dict[int | None, list[int]] = defaultdict(list)
    for a in plan:
        chosen[a.endpoint_id if a.seated else None].append(a.job_id)
    rows = claims_write(
        chosen,
        token=token,
        expires=db_param(Job, "lease_expires_at", now + dt.timedelta(seconds=lease_s)),
        started=db_param(Job, "started_at", now),
    )
    planned = {a.job_id: a for a in plan}
    claims: dict[int, Claim] = {}
    for row in rows:
        pk, kind, payload, attempts, max_attempts, owner, tokens, model, key, ttl, *at = row
        a = planned[pk]
        claims[pk] = Claim(
            job_id=pk,
            token=token,
            kind=kind,
            payload=payload,
            attempt=attempts,
            max_attempts=max_attempts,
            target=a.target,
            owner_id=owner,
            tokens_estimate=tokens,
            tokens_charged=a.tokens_charged,
            rank=a.rank,
            model=model,
            cache_key=key,
            cache_ttl=ttl,
            waited_s=(at[1] - at[0]).total_seconds(),
            seated=a.seated,
        )
    return [claims[a.job_id] for a in plan if a.job_id in claims]  # in the order planned


def claims_seat(claims: Sequence[Claim]) -> int:
    """Write each claim that waited behind its endpoint to that endpoint: its call took the
    place of a call of the same drain there that finished, which the same step records. So
    the endpoint's count of calls in flight (``endpoint_in_flight``) never grows for it. Call
    inside the step's transaction, before the finished calls are recorded."""
    # Every step of a drain at a full endpoint runs it: one statement written once
    # (``llmqueue.db.rows``), fenced by each claim's lease.
    rows = [(c.target.id, c.job_id, c.token, Status.RUNNING) for c in claims]
    n = rows_update(Job, assign=("endpoint",), where=("id", "lease_token", "status"), rows=rows)
    metrics.places_passed(c.target.name for c in claims)
    return n


def _backoff() -> BackoffSettings:
    return BackoffSettings(
        base=conf.BACKOFF_BASE_S, cap=conf.BACKOFF_CAP_S, retry_after_cap=conf.RETRY_AFTER_CAP_S
    )


def _failures_apply(results: Sequence[AttemptResult], *, now: dt.datetime) -> list[int]:
    """Each failed call's job to its next state (``policies.retry``), fenced by its lease: a
    lost fence is expected here (the job was reaped meanwhile) and skipped. Returns the jobs
    dead-lettered."""
    dead: list[int] = []
    backoff = _backoff()
    for r in results:
        c = r.claim
        decision = retry_decide(
            outcome=r.call.outcome,
            spent=r.call.spent,
            attempt=c.attempt,
            max_attempts=c.max_attempts,
            error=r.call.error,
            retry_after=r.call.retry_after,
            backoff=backoff,
        )
        job, token = c.job_id, c.token
        due = now + dt.timedelta(seconds=decision.delay)
        if decision.action == "refund":
            job_transition(
                "refund",
                job_id=job,
                token=token,
                strict=False,
                error=decision.error,
                attempts=F("attempts") - 1,
                available_at=due,
            )
        elif decision.action == "retry_later":
            job_transition(
                "retry_later",
                job_id=job,
                token=token,
                strict=False,
                error=decision.error,
                available_at=due,
            )
        elif job_transition(
            "dead_letter",
            job_id=job,
            token=token,
            strict=False,
            error=decision.error,
            finished_at=now,
        ):
            dead.append(job)
    return dead


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
    won = _complete_many([r for r in results if r.call.outcome == Outcome.SUCCESS], now=now)
    dead = _failures_apply([r for r in results if r.call.outcome != Outcome.SUCCESS], now=now)
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
        models=[r.claim.model for r in results],
    )


def _complete_many(results: Sequence[AttemptResult], *, now: dt.datetime) -> list[AttemptResult]:
    """running -> succeeded in one statement; returns the results whose fence held."""
    done = {(r.claim.job_id, r.claim.token): r for r in results}
    won = jobs_complete(
        [
            Completion(r.claim.job_id, r.claim.token, r.call.body, tokens_used(r.call.body))
            for r in results
        ],
        now=now,
    )
    if len(won) == len(results):
        return list(results)
    return [done[(d.job_id, d.token)] for d in won]


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
