"""Deadlines: a queued job past its deadline expires without an upstream call."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from llmqueue.jobs import job_submit, jobs_expire
from llmqueue.jobs.expiry import EXPIRED_ERROR
from llmqueue.jobs.intake import job_spec_check
from llmqueue.models import Job, Status
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import chat_payload

pytestmark = pytest.mark.django_db


def _submit(user, **when):
    spec, problems = job_spec_check(kind="chat", payload=chat_payload(), cache=False, **when)
    assert problems == {}
    job, _ = job_submit(owner=user, spec=spec)
    return job


def test_expires_in_and_deadline_set_the_jobs_deadline(user, echo_endpoint):
    before = timezone.now()
    job = _submit(user, expires_in=60)
    assert (
        before + dt.timedelta(seconds=60)
        <= job.deadline
        <= timezone.now() + dt.timedelta(seconds=60)
    )
    when = (timezone.now() + dt.timedelta(hours=1)).replace(microsecond=0)
    assert _submit(user, deadline=when.isoformat()).deadline == when


@pytest.mark.parametrize(
    ("when", "field", "reason"),
    [
        ({"expires_in": 0}, "expires_in", "greater than or equal to 1"),
        ({"expires_in": "10"}, "expires_in", "integer"),
        ({"deadline": "tomorrow"}, "deadline", "ISO 8601"),
        ({"deadline": "2020-01-01T00:00:00Z"}, "deadline", "in the past"),
        ({"deadline": "2999-01-01T00:00:00"}, "deadline", "time zone"),
        ({"deadline": "2999-01-01T00:00:00Z", "expires_in": 5}, "deadline", "not both"),
    ],
)
def test_a_bad_deadline_is_named_with_its_reason(when, field, reason):
    spec, problems = job_spec_check(kind="chat", payload=chat_payload(), **when)
    assert spec is None
    assert reason in " ".join(problems[field])


def test_a_job_past_its_deadline_is_never_claimed_and_the_sweep_expires_it(user, echo_endpoint):
    late = _submit(user, expires_in=30)
    on_time = _submit(user, expires_in=3600)
    plain = _submit(user)
    Job.objects.filter(pk=late.pk).update(deadline=timezone.now() - dt.timedelta(seconds=1))
    with transaction.atomic():
        claimed = {c.job_id for c in jobs_claim(limit=10)}
    assert claimed == {on_time.pk, plain.pk}  # the late one was not planned
    assert jobs_expire() == 1
    late.refresh_from_db()
    assert (late.status, late.error, late.attempts) == (Status.EXPIRED, EXPIRED_ERROR, 0)
    assert late.finished_at is not None and late.is_terminal
    assert jobs_expire() == 0


def test_the_sweep_goes_in_batches(user, echo_endpoint, monkeypatch):
    monkeypatch.setattr("llmqueue.jobs.expiry.SWEEP_BATCH", 2)
    jobs = [_submit(user, expires_in=30) for _ in range(5)]
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(deadline=timezone.now())
    assert jobs_expire(rounds=2) == 4  # two rounds of two, the fifth waits for the next sweep
    assert jobs_expire() == 1
    assert set(Job.objects.values_list("status", flat=True)) == {Status.EXPIRED}


def test_an_expired_leader_releases_its_followers(user, echo_endpoint):
    spec, _ = job_spec_check(kind="chat", payload=chat_payload("same"), expires_in=30)
    leader, _ = job_submit(owner=user, spec=spec)
    spec2, _ = job_spec_check(kind="chat", payload=chat_payload("same"))
    follower, _ = job_submit(owner=user, spec=spec2)
    assert follower.follows_id == leader.pk
    Job.objects.filter(pk=leader.pk).update(deadline=timezone.now())
    assert jobs_expire() == 1
    follower.refresh_from_db()
    assert (follower.status, follower.follows_id) == (Status.QUEUED, None)


def test_api_takes_a_deadline_and_filters_expired(api, user, echo_endpoint):
    r = api.post("/api/jobs/", {"payload": chat_payload(), "expires_in": 5}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["deadline"] is not None
    r = api.post(
        "/api/jobs/bulk/",
        {"jobs": [{"payload": chat_payload(), "deadline": "2020-01-01T00:00:00Z"}]},
        format="json",
    )
    assert r.status_code == 400
    assert "in the past" in str(r.json())
    Job.objects.update(deadline=timezone.now())
    jobs_expire()
    r = api.get("/api/jobs/?status=expired")
    assert r.status_code == 200
    assert [j["status"] for j in r.json()["results"]] == ["expired"]
