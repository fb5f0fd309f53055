"""llmqueue.jobs.timeseries: per-minute counts and sampled percentiles, finished minutes cached."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from llmqueue.jobs import jobs_submit_many, timeseries
from llmqueue.models import Job, JobAttempt, Outcome, Status
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def finished_jobs(owner, n: int, *, at: dt.datetime, status=Status.SUCCEEDED) -> list[Job]:
    """n jobs that finished at ``at``: the i-th waited i*10 ms and its call took i ms."""
    _, jobs = jobs_submit_many(owner=owner, specs=[chat_spec(str(i)) for i in range(n)])
    for i, job in enumerate(jobs, start=1):
        created = at - dt.timedelta(seconds=1)
        Job.objects.filter(pk=job.pk).update(
            status=status,
            created_at=created,
            started_at=created + dt.timedelta(milliseconds=10 * i),
            finished_at=at,
        )
        JobAttempt.objects.create(
            job=job, number=1, started_at=at, duration_ms=float(i), outcome=Outcome.SUCCESS
        )
    return jobs


def test_percentile_is_nearest_rank():
    assert timeseries.percentile([], 50) is None
    assert timeseries.percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert timeseries.percentile(values, 50) == 50.0
    assert timeseries.percentile(values, 95) == 95.0


def test_window_summary_counts_exactly_and_samples_percentiles(user, echo_endpoint, monkeypatch):
    at = timezone.now() - dt.timedelta(minutes=5)
    finished_jobs(user, 40, at=at)
    finished_jobs(user, 3, at=at, status=Status.DEAD)
    window = (at - dt.timedelta(seconds=1), at + dt.timedelta(seconds=1))
    full = timeseries.window_summary(*window)
    assert (full["finished"], full["succeeded"], full["dead"]) == (43, 40, 3)
    # 1..40 ms and 1..3 ms: the 22nd of the 43 is 19; the waits are ten times as long
    assert full["upstream_p50_ms"] == 19.0 and full["wait_p95_ms"] == 380.0
    monkeypatch.setattr(timeseries, "SAMPLE", 10)
    sampled = timeseries.window_summary(*window)
    assert sampled["finished"] == 43  # counts stay exact
    assert 10 <= sampled["upstream_p50_ms"] <= 30  # about the median, from every 5th job


def test_last_hour_has_one_row_a_minute_and_caches_the_past(user, echo_endpoint):
    now = timezone.now().replace(second=30, microsecond=0)  # mid-minute, whenever it runs
    minute = now.replace(second=0)
    past = minute - dt.timedelta(minutes=3) + dt.timedelta(seconds=5)
    jobs = finished_jobs(user, 2, at=past)
    rows = timeseries.last_hour(now=now)
    assert len(rows) == 60 and rows[-1]["t"] == minute.isoformat()
    assert rows[-4]["finished"] == 2 and rows[-4]["upstream_p95_ms"] == 2.0
    # A finished minute is not read again: later rows would only be a bug (or a clock jump).
    Job.objects.filter(pk=jobs[0].pk).delete()
    assert timeseries.last_hour(now=now)[-4]["finished"] == 2
    finished_jobs(user, 1, at=now)
    assert timeseries.last_hour(now=now + dt.timedelta(seconds=1))[-1]["finished"] == 1
