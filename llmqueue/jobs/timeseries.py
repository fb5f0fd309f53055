"""The dashboard's last hour: finished jobs per minute, queue wait and upstream time (p50, p95).

Read from the Job table through its ``finished_at`` index, one minute at a time:

- A minute that has passed never changes again, so it is computed once and kept in Django's
  cache (local memory, or Redis when ``REDIS_URL`` is set); a poll of the dashboard computes
  only the current minute and any new one.
- Percentiles come from a systematic sample of at most ``SAMPLE`` jobs of the minute (every
  k-th id), so that a minute of 30,000 jobs costs no more than one of 2,000. Counts are exact.

Queue wait is ``started_at - created_at`` (submission to first claim). Upstream time is
``JobAttempt.duration_ms`` of the attempts of the minute's jobs (failed calls included).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count, F, Q
from django.utils import timezone

from llmqueue.models import Job, JobAttempt, Status

#: the most jobs whose timings one minute's percentiles are computed from
SAMPLE = 2000
#: a minute is final this long after it ends (its last transactions have committed)
SETTLE = timedelta(seconds=10)
_KEY = "llmqueue:minute:v1:{:%Y%m%d%H%M}"


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0-100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else round(p, 1)


def window_summary(start: datetime, end: datetime) -> dict[str, Any]:
    """Counts and timing percentiles (ms) of the jobs that finished in [start, end)."""
    jobs = Job.objects.filter(finished_at__gte=start, finished_at__lt=end)
    counts = jobs.aggregate(
        finished=Count("id"),
        succeeded=Count("id", filter=Q(status=Status.SUCCEEDED)),
        dead=Count("id", filter=Q(status=Status.DEAD)),
    )
    every = max(1, math.ceil(counts["finished"] / SAMPLE))
    sample = jobs.annotate(slot=F("id") % every).filter(slot=0) if every > 1 else jobs
    waits = [
        (started - created).total_seconds() * 1000
        for created, started in sample.filter(started_at__isnull=False).values_list(
            "created_at", "started_at"
        )
        if started is not None  # (filtered above; for the type checker)
    ]
    attempts = JobAttempt.objects.filter(
        job__finished_at__gte=start, job__finished_at__lt=end, duration_ms__isnull=False
    )
    if every > 1:
        attempts = attempts.annotate(slot=F("job_id") % every).filter(slot=0)
    upstream = [ms for ms in attempts.values_list("duration_ms", flat=True) if ms is not None]
    return {
        **counts,
        "wait_p50_ms": _ms(waits, 50),
        "wait_p95_ms": _ms(waits, 95),
        "upstream_p50_ms": _ms(upstream, 50),
        "upstream_p95_ms": _ms(upstream, 95),
    }


def _minute(start: datetime, now: datetime) -> dict[str, Any]:
    end = start + timedelta(minutes=1)
    final = end + SETTLE <= now
    key = _KEY.format(start)
    if final and (kept := cache.get(key)) is not None:
        return kept
    row = {"t": start.isoformat(), **window_summary(start, end)}
    if final:
        cache.set(key, row, timeout=2 * 3600)
    return row


def last_hour(*, minutes: int = 60, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per minute, oldest first, the current (partial) minute last."""
    now = now or timezone.now()
    current = now.replace(second=0, microsecond=0)
    return [_minute(current - timedelta(minutes=m), now) for m in range(minutes - 1, -1, -1)]
