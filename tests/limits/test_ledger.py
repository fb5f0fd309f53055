"""Limits at submission (API 429 with headers, quotas that reset) and at dispatch (buckets)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction
from django.utils import timezone

from llmqueue.errors import OverLimit
from llmqueue.jobs import attempt_usages, job_submit, jobs_record, jobs_submit_many
from llmqueue.jobs.fairness import fair_seqs_assign
from llmqueue.limits.ledger import buckets_reconcile
from llmqueue.models import Endpoint, Job, Outcome, TokenBucket, UserLimits
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_payload, chat_spec, make_endpoint, make_user

pytestmark = pytest.mark.django_db


def claim(limit: int = 100):
    with transaction.atomic():
        return jobs_claim(limit=limit)


def proven(ep: Endpoint) -> Endpoint:
    """No probation: as if it had answered before."""
    Endpoint.objects.filter(pk=ep.pk).update(breaker={"window": "s"})
    return ep


def test_over_the_submission_rate_is_429_with_headers(api, user, echo_endpoint):
    UserLimits.objects.create(user=user, submissions_per_minute=2)
    for _ in range(2):
        assert api.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201
    r = api.post("/api/jobs/", {"payload": chat_payload()}, format="json")
    assert r.status_code == 429
    assert r.json()["limit"] == "submissions_per_minute" and "frees in" in r.json()["detail"]
    assert r["X-RateLimit-Limit"] == "2" and r["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(r["Retry-After"]) <= 30 and 0 < int(r["X-RateLimit-Reset"]) <= 60
    assert Job.objects.count() == 2  # the refused one wrote nothing


def test_defaults_apply_to_everyone_and_a_users_row_overrides(api, user, other_user, echo_endpoint):
    UserLimits.objects.create(user=None, jobs_per_day=1)
    UserLimits.objects.create(user=other_user, jobs_per_day=10)
    assert api.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201
    assert api.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 429
    for _ in range(3):
        job_submit(owner=other_user, spec=chat_spec())


def test_daily_quota_resets_at_midnight_utc(api, user, echo_endpoint):
    UserLimits.objects.create(user=user, jobs_per_day=3)
    r = api.post("/api/jobs/bulk/", {"jobs": [{"payload": chat_payload()}] * 3}, format="json")
    assert r.status_code == 201
    r = api.post("/api/jobs/", {"payload": chat_payload()}, format="json")
    assert r.status_code == 429 and r.json()["limit"] == "jobs_per_day"
    now = timezone.now()
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(r["Retry-After"]) - (midnight - now).total_seconds()) <= 2
    # the day turns: yesterday's jobs no longer count
    Job.objects.update(created_at=now - dt.timedelta(days=1))
    assert api.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201


def test_token_quota_counts_estimates(user, echo_endpoint):
    UserLimits.objects.create(user=user, tokens_per_month=1000)
    job_submit(
        owner=user,
        spec=chat_spec(max_attempts=None).__class__(
            kind="chat", payload=chat_payload(max_tokens=600)
        ),
    )
    with pytest.raises(OverLimit) as err:
        job_submit(
            owner=user,
            spec=chat_spec().__class__(kind="chat", payload=chat_payload(max_tokens=600)),
        )
    assert err.value.limit_name == "tokens_per_month"


def test_usage_shows_limits_and_use(api, user, echo_endpoint):
    UserLimits.objects.create(user=user, jobs_per_day=50, submissions_per_minute=10)
    api.post("/api/jobs/bulk/", {"jobs": [{"payload": chat_payload()}] * 4}, format="json")
    body = api.get("/api/usage/").json()
    assert body["limits"]["jobs_per_day"] == 50 and body["limits"]["tokens_per_minute"] is None
    assert body["usage"]["jobs_today"] == 4 and body["usage"]["submissions_remaining"] == 9
    assert body["usage"]["tokens_today"] > 0


def test_endpoint_rpm_holds_jobs_back_without_spending_attempts(user, settings):
    settings.LLMQUEUE = {"LIMIT_BURST_S": 60}  # the whole minute at once: 3
    ep = proven(make_endpoint(rpm_limit=3, max_concurrency=100))
    for i in range(10):
        job_submit(owner=user, spec=chat_spec(str(i)))
    assert len(claim()) == 3
    assert claim() == []
    assert Job.objects.filter(status="queued", attempts=0).count() == 7
    bucket = TokenBucket.objects.get(scope="endpoint-rpm", key=str(ep.pk))
    assert bucket.tokens == pytest.approx(0, abs=0.01) and bucket.capacity == 3


def test_an_rpm_limit_is_paced_not_spent_in_the_first_second(user, other_user):
    ep = proven(make_endpoint(rpm_limit=600, max_concurrency=1000))
    UserLimits.objects.create(user=other_user, requests_per_minute=120)
    jobs_submit_many(owner=user, specs=[chat_spec(str(i)) for i in range(100)])
    jobs_submit_many(owner=other_user, specs=[chat_spec(f"o{i}") for i in range(100)])
    first = claim(limit=1000)
    # the default burst, 1 s of refill: 10 of the endpoint's 600, 2 of the user's 120
    assert len(first) == 10
    assert sum(c.owner_id == other_user.pk for c in first) == 2
    bucket = TokenBucket.objects.get(scope="endpoint-rpm", key=str(ep.pk))
    assert (bucket.capacity, bucket.refill_per_s) == (10, 10)
    assert TokenBucket.objects.get(scope="user-rpm", key=str(other_user.pk)).capacity == 2


def test_user_tpm_with_one_big_job_goes_alone_not_never(user, other_user):
    proven(make_endpoint(max_concurrency=100))
    UserLimits.objects.create(user=user, tokens_per_minute=100)
    big = job_submit(
        owner=user, spec=chat_spec().__class__(kind="chat", payload=chat_payload(max_tokens=5000))
    )[0]
    small = job_submit(owner=user, spec=chat_spec())[0]
    theirs = job_submit(owner=other_user, spec=chat_spec())[0]
    claimed = {c.job_id for c in claim()}
    assert big.pk in claimed  # capped at the bucket's capacity
    assert small.pk not in claimed  # the user's minute is spent
    assert theirs.pk in claimed  # another user's job is not held back by it


def test_usage_reconciles_the_token_bucket(user):
    ep = proven(make_endpoint(tpm_limit=10000, max_concurrency=100))
    job_submit(
        owner=user, spec=chat_spec().__class__(kind="chat", payload=chat_payload(max_tokens=1000))
    )
    (c,) = claim()
    before = TokenBucket.objects.get(scope="endpoint-tpm", key=str(ep.pk)).tokens
    body = {"choices": [], "usage": {"total_tokens": 10}}
    r = attempt(c, started_at=timezone.now(), duration_ms=5, outcome=Outcome.SUCCESS, body=body)
    with transaction.atomic():
        jobs_record([r])
        buckets_reconcile(attempt_usages([r]))
    after = TokenBucket.objects.get(scope="endpoint-tpm", key=str(ep.pk)).tokens
    assert after - before == pytest.approx(c.tokens_estimate - 10)
    assert Job.objects.get().tokens_used == 10


def test_calls_that_charged_no_tokens_leave_every_bucket_alone(user):
    """A step whose calls charged no tokens-per-minute bucket reconciles nothing, whatever
    buckets exist (a request-rate bucket has no usage to correct)."""
    proven(make_endpoint(rpm_limit=100, max_concurrency=100))
    job_submit(owner=user, spec=chat_spec())
    (c,) = claim()
    before = list(TokenBucket.objects.values_list("scope", "key", "tokens", "version"))
    r = attempt(c, body={"choices": [], "usage": {"total_tokens": 10}})
    assert attempt_usages([r]) == []
    with transaction.atomic():
        buckets_reconcile(attempt_usages([r]))
    assert list(TokenBucket.objects.values_list("scope", "key", "tokens", "version")) == before


def test_a_paused_endpoint_takes_nothing_until_the_pause_ends(user):
    ep = proven(make_endpoint())
    job_submit(owner=user, spec=chat_spec())
    Endpoint.objects.filter(pk=ep.pk).update(paused_until=time.time() + 0.3)
    assert claim() == []
    time.sleep(0.35)
    assert len(claim()) == 1


def test_fair_seqs_interleave_owners_and_latecomers_join_the_current_round(echo_endpoint):
    a, b, c = make_user(), make_user(), make_user()
    jobs_submit_many(owner=a, specs=[chat_spec(str(i)) for i in range(100)])
    jobs_submit_many(owner=b, specs=[chat_spec(str(i)) for i in range(3)])
    assert list(
        Job.objects.filter(owner=b).order_by("fair_seq").values_list("fair_seq", flat=True)
    ) == [0, 1, 2]
    # a's first 50 ran: the head of the line is now at 50
    Job.objects.filter(owner=a, fair_seq__lt=50).update(status="succeeded")
    Job.objects.filter(owner=b).update(status="succeeded")
    jobs_submit_many(owner=c, specs=[chat_spec(str(i)) for i in range(2)])
    assert sorted(Job.objects.filter(owner=c).values_list("fair_seq", flat=True)) == [50, 51]
    jobs = [Job(owner=a, model="echo", priority=5)]
    fair_seqs_assign(owner=a, jobs=jobs)
    assert jobs[0].fair_seq == 100  # behind a's own queue
