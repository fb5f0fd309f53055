"""A claim's lease: renewed while its drain lives, given back when the drain stops, and reaped
when the drain died (its calls are then lost, and logged as such)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from llmqueue import metrics
from llmqueue.conf import conf
from llmqueue.jobs.claims import Claim
from llmqueue.jobs.singleflight import followers_release, followers_rescue
from llmqueue.jobs.transitions import job_transition, may_start
from llmqueue.models import Endpoint, Job, JobAttempt, Outcome, Status


def jobs_renew(*, tokens: Iterable[str], lease_s: float | None = None) -> int:
    """Extend the leases of the claims a live drain still holds."""
    tokens = list(set(tokens))
    if not tokens:
        return 0
    expires = timezone.now() + dt.timedelta(seconds=conf.LEASE_S if lease_s is None else lease_s)
    return Job.objects.filter(status=Status.RUNNING, lease_token__in=tokens).update(
        lease_expires_at=expires
    )


def jobs_release(*, claims: Iterable[Claim]) -> int:
    """running -> queued at once, the attempt given back: for calls a stopping drain cut off.

    The upstream may have seen the call; the answer was never read, so the job runs again.
    """
    n = 0
    now = timezone.now()
    with transaction.atomic():
        for c in claims:
            n += job_transition(
                "release",
                job_id=c.job_id,
                token=c.token,
                strict=False,
                attempts=F("attempts") - 1,
                available_at=now,
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
    lapsed, why = _lost_claims(holders, now=now)
    with transaction.atomic():
        followers_rescue(now=now)
        # In job_running's order: SQLite then walks that partial index (the running jobs),
        # where the model's default order (-id) made it walk the whole table.
        rows = list(
            Job.objects.filter(may_start("reap") & lapsed)
            .order_by("endpoint_id", "lease_expires_at")
            .values_list(
                "pk", "attempts", "max_attempts", "endpoint_id", "started_at", "lease_token"
            )[:limit]
        )
        if not rows:
            return 0
        _lost_attempts_log(rows, why=why, now=now)
        n = 0
        ended: list[int] = []
        for pk, attempts, max_attempts, _, _, token in rows:
            if attempts < max_attempts:
                n += job_transition(
                    "reap", job_id=pk, token=token, where=lapsed, strict=False, available_at=now
                )
            elif job_transition(
                "reap_dead",
                job_id=pk,
                token=token,
                where=lapsed,
                strict=False,
                error=f"gave up after {attempts} attempts; the last one's worker died",
                finished_at=now,
            ):
                ended.append(pk)
        followers_release(ended, now=now)
        metrics.jobs_finished(Status.DEAD, len(ended))
    return n + len(ended)


def _lost_claims(holders: Collection[str], *, now: dt.datetime) -> tuple[Q, str]:
    """Which claims are lost, and why: those of the drains ``holders`` (by their tokens'
    prefix), or else every claim whose lease lapsed."""
    if not holders:
        return Q(lease_expires_at__lt=now), "lease expired: the worker died or stalled mid-call"
    held = Q(pk__in=[])
    for tag in holders:
        if not tag:
            raise ValueError("holders: an empty tag would match every claim")
        held |= Q(lease_token__startswith=tag)
    return held, "its worker died mid-call (its process is gone)"


def _lost_attempts_log(rows: Sequence[tuple[Any, ...]], *, why: str, now: dt.datetime) -> None:
    """An attempt row (outcome lost) for each reaped claim, and the metric."""
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
