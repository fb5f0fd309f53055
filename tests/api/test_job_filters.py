"""GET /api/jobs/ filters: each one narrows the list; an unknown parameter or a bad value is a
400 naming it, never ignored."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from llmqueue.jobs import job_submit, jobs_submit_many
from llmqueue.models import Job, Kind, Status
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db


def ids(api, query: str) -> list[int]:
    r = api.get(f"/api/jobs/?{query}")
    assert r.status_code == 200, r.content
    return [j["id"] for j in r.json()["results"]]


@pytest.fixture
def jobs(user, other_user, echo_endpoint):
    low = job_submit(owner=user, spec=chat_spec(priority=1))[0]
    high = job_submit(owner=user, spec=chat_spec(priority=9))[0]
    batch, in_batch = jobs_submit_many(owner=user, specs=[chat_spec(priority=5)], name="b")
    theirs = job_submit(owner=other_user, spec=chat_spec(priority=9))[0]
    Job.objects.filter(pk=low.pk).update(
        status=Status.CANCELLED,
        model="other",
        kind=Kind.COMPLETION,
        created_at=timezone.now() - dt.timedelta(days=2),
    )
    return {
        "low": low.pk,
        "high": high.pk,
        "batched": in_batch[0].pk,
        "batch": batch.pk,
        "theirs": theirs.pk,
    }


def test_each_filter_narrows_the_list(api, jobs):
    assert ids(api, "") == [jobs["batched"], jobs["high"], jobs["low"]]
    assert ids(api, f"batch={jobs['batch']}") == [jobs["batched"]]
    assert ids(api, "model=other") == [jobs["low"]]
    assert ids(api, "kind=completion") == [jobs["low"]]
    assert ids(api, "status=cancelled") == [jobs["low"]]
    assert ids(api, "priority=9") == [jobs["high"]]
    assert ids(api, "priority_min=5") == [jobs["batched"], jobs["high"]]
    assert ids(api, "priority_max=5") == [jobs["batched"], jobs["low"]]
    yesterday = (timezone.now() - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(api, f"created_after={yesterday}") == [jobs["batched"], jobs["high"]]
    assert ids(api, f"created_before={yesterday}") == [jobs["low"]]
    assert ids(api, "ordering=-priority") == [jobs["high"], jobs["batched"], jobs["low"]]
    assert ids(api, "ordering=priority") == [jobs["low"], jobs["batched"], jobs["high"]]
    assert ids(api, "page_size=1&page=2") == [jobs["high"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("bogus=1", "bogus"),
        ("Status=queued", "Status"),
        ("status=bogus", "status"),
        ("batch=x", "batch"),
        ("priority=10", "priority"),
        ("priority=1.5", "priority"),
        ("kind=image", "kind"),
        ("created_after=yesterday", "created_after"),
        ("ordering=payload", "ordering"),
        ("page_size=0", "page_size"),
        ("page_size=x", "page_size"),
        ("page=x", "page"),
        ("wait=5", "wait"),
    ],
)
def test_an_unknown_parameter_or_a_bad_value_is_a_400_naming_it(api, jobs, query, field):
    r = api.get(f"/api/jobs/?{query}")
    assert r.status_code == 400, (query, r.content)
    assert field in r.json(), r.json()


def test_one_job_still_takes_wait(api, jobs):
    assert api.get(f"/api/jobs/{jobs['high']}/?wait=0").status_code == 200
