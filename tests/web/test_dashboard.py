"""The dashboard page and the JSON it polls."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from llmqueue.jobs import job_submit
from llmqueue.models import Job, Status, TokenBucket
from tests.factories import chat_spec, make_endpoint
from tests.fixtures import logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


def test_dashboard_page_has_every_section_and_its_data(user):
    make_endpoint(name="gpu-box-1", latency_ms=42.0)
    page = logged_in(user).get("/").content.decode()
    for text in [
        'id="dashboard-data" type="application/json"',
        "data-dashboard",
        'data-url="/dashboard/data/"',
        "Waiting and running by priority",
        "Jobs finished per second",
        "Queue wait (submitted to started)",
        "Upstream call time",
        "The numbers, minute by minute",
        "cache hit rate",
        "Rate limits",
        "gpu-box-1",
        "42 ms",
        'class="badge ok">healthy',
    ]:
        assert text in page, text
    assert "Dead letters by error" not in page  # operators only


def test_dashboard_data(user, staff, echo_endpoint):
    _, b, c = (job_submit(owner=user, spec=chat_spec(priority=p))[0] for p in (9, 9, 2))
    now = timezone.now()
    Job.objects.filter(pk=c.pk).update(
        status=Status.DEAD, error="gave up after 5 attempts; last error: HTTP 503: down"
    )
    Job.objects.filter(pk=b.pk).update(
        status=Status.SUCCEEDED,
        started_at=now - dt.timedelta(seconds=1),
        created_at=now - dt.timedelta(seconds=3),
        finished_at=now,
        cache_hit=True,
    )
    TokenBucket.objects.create(
        scope="user-rpm", key=str(user.pk), capacity=10, refill_per_s=0, tokens=0.2, updated_at=0
    )
    data = logged_in(user).get("/dashboard/data/").json()
    assert data["depth"]["queued"] == 1 and data["depth"]["dead"] == 1
    assert data["by_priority"] == [{"priority": 9, "queued": 1, "running": 0}]
    assert data["latency"]["wait_p50_ms"] == 2000.0 and data["cache_hit_rate"] == 1.0
    # this minute, or the one before if the minute turned meanwhile
    assert len(data["series"]) == 60 and sum(r["succeeded"] for r in data["series"][-2:]) == 1
    assert data["rate_limits"]["buckets"][0]["empty"] is True
    assert {"waits", "upstream_429"} <= set(data["rate_limits"])
    assert data["endpoints"][0]["name"] == echo_endpoint.name
    assert data["dead_letter_groups"] is None
    groups = logged_in(staff).get("/dashboard/data/").json()["dead_letter_groups"]
    assert groups == [{"reason": "HTTP 503: down", "count": 1}]


def test_api_stats_keeps_its_fields_and_adds_optional_ones(api):
    stats = api.get("/api/stats/").json()
    assert {"depth", "due", "throughput_per_s", "cache_hit_rate", "endpoints"} <= set(stats)
    assert {"latency", "rate_limits", "by_priority"} <= set(stats)
