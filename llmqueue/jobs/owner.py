"""The owner's and the operator's transitions: cancel and retry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from llmqueue import metrics
from llmqueue.jobs.singleflight import followers_release
from llmqueue.jobs.transitions import job_transition, jobs_transition, wake_on_commit
from llmqueue.models import Endpoint, Status


def job_cancel(*, job_id: int) -> None:
    """queued -> cancelled. Raises TransitionError from any other state.

    The job's single-flight followers, if it led any, are released to run on their own.
    """
    now = timezone.now()
    with transaction.atomic():
        job_transition("cancel", job_id=job_id, finished_at=now)
        if followers_release([job_id], now=now):
            wake_on_commit()
    metrics.jobs_finished(Status.CANCELLED)


def _requeued(now: dt.datetime) -> dict[str, Any]:
    """A retried job's fresh start: queued now, with its attempts, error and result cleared."""
    return {
        "attempts": 0,
        "error": "",
        "result": None,
        "available_at": now,
        "finished_at": None,
        "follows": None,  # a retried follower runs on its own
        "deadline": None,  # asked to run again: a deadline that passed would expire it at once
    }


def job_retry(*, job_id: int) -> None:
    """dead | cancelled -> queued, with its attempts reset. Raises TransitionError otherwise."""
    now = timezone.now()
    with transaction.atomic():
        job_transition("retry", job_id=job_id, pinned_endpoint=None, **_requeued(now))
        wake_on_commit()


def jobs_retry(*, job_ids: Iterable[int], endpoint_id: int | None = None) -> int:
    """job_retry for many; returns how many were requeued (the others were not dead/cancelled).

    With ``endpoint_id`` the jobs are pinned to that endpoint (the claim gives them to it and
    no other), and only those whose model it serves are requeued. Without, any pin is cleared.
    """
    now = timezone.now()
    requeue = Q(pk__in=list(job_ids))
    if endpoint_id is not None:
        served = Endpoint.objects.filter(pk=endpoint_id).values_list("served_models", flat=True)
        requeue &= Q(model__in=served.first() or [])
    with transaction.atomic():
        n = jobs_transition(
            "retry", where=requeue, pinned_endpoint_id=endpoint_id, **_requeued(now)
        )
        if n:
            wake_on_commit()
    return n
