"""The state machine: every transition, its guard, and the claim's order and capacity rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone
from django_q.brokers import get_broker

from llmqueue.errors import ModelNotServed, TransitionError
from llmqueue.jobs import (
    job_cancel,
    job_retry,
    job_submit,
    jobs_reap,
    jobs_record,
    jobs_renew,
    jobs_submit_many,
)
from llmqueue.models import Job, JobAttempt, Outcome, Status
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


def claim(limit: int = 100):
    with transaction.atomic():
        return jobs_claim(limit=limit)


def result(c, outcome=Outcome.SUCCESS, **kw):
    return attempt(c, started_at=timezone.now(), duration_ms=1.0, outcome=outcome, **kw)


def record(*results):
    with transaction.atomic():
        jobs_record(list(results))


def test_submit_queues_and_refuses_unserved_models(user, echo_endpoint):
    job, created = job_submit(owner=user, spec=chat_spec())
    assert created and job.status == Status.QUEUED and job.model == "echo" and job.max_attempts == 5
    with pytest.raises(ModelNotServed) as err:
        job_submit(
            owner=user,
            spec=chat_spec().__class__(kind="chat", payload={"model": "gpt-x", "messages": []}),
        )
    assert "gpt-x" in str(err.value) and "echo" in str(err.value)


def test_disabled_endpoint_serves_nothing(user):
    make_endpoint(enabled=False)
    with pytest.raises(ModelNotServed):
        job_submit(owner=user, spec=chat_spec())


def test_idempotency_key_returns_the_same_job(user, other_user, echo_endpoint):
    a, created_a = job_submit(owner=user, spec=chat_spec(idempotency_key="k1"))
    b, created_b = job_submit(owner=user, spec=chat_spec("different", idempotency_key="k1"))
    c, created_c = job_submit(owner=other_user, spec=chat_spec(idempotency_key="k1"))
    assert created_a and not created_b and created_c
    assert a.pk == b.pk != c.pk
    assert Job.objects.count() == 2


def test_bulk_is_all_or_nothing(user, echo_endpoint):
    bad = chat_spec().__class__(kind="chat", payload={"model": "nope", "messages": []})
    with pytest.raises(ModelNotServed):
        jobs_submit_many(owner=user, specs=[chat_spec(), bad])
    assert Job.objects.count() == 0
    batch, jobs = jobs_submit_many(owner=user, specs=[chat_spec(str(i)) for i in range(5)])
    assert [j.batch_id for j in jobs] == [batch.pk] * 5
    assert Job.objects.count() == 5


def test_a_submission_wakes_as_many_drains_as_its_jobs_fill(
    user, echo_endpoint, settings, django_capture_on_commit_callbacks
):
    settings.LLMQUEUE = {"DRAIN_CONCURRENCY": 4}
    settings.LLMQUEUE_DRAINS_PER_HOST = 2
    broker = get_broker()
    before = broker.queue_size()
    with django_capture_on_commit_callbacks(execute=True):
        jobs_submit_many(owner=user, specs=[chat_spec() for _ in range(9)])
    assert broker.queue_size() - before == 2  # 9 jobs fill 3 drains of 4; the host has 2 slots
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=chat_spec())
    assert broker.queue_size() - before == 3  # one job: one drain


def test_claim_orders_by_priority_then_age(user, echo_endpoint):
    low = job_submit(owner=user, spec=chat_spec(priority=1))[0]
    high_old = job_submit(owner=user, spec=chat_spec(priority=9))[0]
    mid = job_submit(owner=user, spec=chat_spec(priority=5))[0]
    high_new = job_submit(owner=user, spec=chat_spec(priority=9))[0]
    got = [c.job_id for c in claim(limit=3)]
    assert got == [high_old.pk, high_new.pk, mid.pk]
    assert [c.job_id for c in claim()] == [low.pk]


def test_claim_skips_jobs_not_yet_due(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    Job.objects.filter(pk=job.pk).update(available_at=timezone.now() + dt.timedelta(seconds=30))
    assert claim() == []


def test_claim_respects_max_concurrency_across_claims(user):
    ep = make_endpoint(max_concurrency=2)
    for _ in range(5):
        job_submit(owner=user, spec=chat_spec())
    assert len(claim()) == 2
    assert claim() == []  # the endpoint is full, whoever asks
    running = Job.objects.filter(status=Status.RUNNING)
    assert running.count() == 2 and {j.endpoint_id for j in running} == {ep.pk}


def test_expired_leases_do_not_count_as_in_flight(user):
    make_endpoint(max_concurrency=1)
    job_submit(owner=user, spec=chat_spec())
    job_submit(owner=user, spec=chat_spec())
    assert len(claim()) == 1
    Job.objects.filter(status=Status.RUNNING).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert len(claim()) == 1


def test_claim_routes_by_model_and_round_robins(user):
    a = make_endpoint(name="a", served_models=["m1"])
    b = make_endpoint(name="b", served_models=["m1", "m2"])
    c = make_endpoint(name="c", served_models=["m2"], enabled=False)
    for model in ["m1"] * 4 + ["m2"] * 2:
        job_submit(
            owner=user,
            spec=chat_spec().__class__(
                kind="chat",
                payload={"model": model, "messages": [{"role": "user", "content": "x"}]},
                cache=False,  # identical requests: each must run (not follow the first)
            ),
        )
    claims = claim()
    by_model = {}
    for cl in claims:
        by_model.setdefault(cl.payload["model"], []).append(cl.target.id)
    assert sorted(by_model["m1"]) == sorted([a.pk, a.pk, b.pk, b.pk])
    assert by_model["m2"] == [b.pk, b.pk]
    assert c.pk not in {cl.target.id for cl in claims}


def test_claim_counts_an_attempt_and_sets_a_lease(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    job.refresh_from_db()
    assert job.status == Status.RUNNING and job.attempts == 1 == c.attempt
    assert job.lease_token == c.token and job.lease_expires_at > timezone.now()
    assert job.started_at is not None


def test_success_and_fence(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    record(result(c, body={"answer": 42}, http_status=200))
    job.refresh_from_db()
    assert (
        job.status == Status.SUCCEEDED and job.result == {"answer": 42} and job.lease_token is None
    )
    assert JobAttempt.objects.get(job=job).outcome == Outcome.SUCCESS
    # a late duplicate outcome (a drain that lost its lease) changes nothing but the log
    record(result(c, outcome=Outcome.REJECTED, error="late"))
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.error == ""


def test_successes_in_one_step_where_one_lease_was_lost(user, echo_endpoint):
    # One step records two successes; one job's lease lapsed meanwhile and another claim
    # holds it now. Only the held one completes; the other keeps its new claim untouched.
    kept, lost = (job_submit(owner=user, spec=chat_spec())[0] for _ in range(2))
    c_kept, c_lost = sorted(claim(), key=lambda c: c.job_id != kept.pk)
    Job.objects.filter(pk=lost.pk).update(lease_token="someone-else")
    record(result(c_kept, body={"n": 1}), result(c_lost, body={"n": 2}))
    kept.refresh_from_db()
    lost.refresh_from_db()
    assert kept.status == Status.SUCCEEDED and kept.result == {"n": 1}
    assert lost.status == Status.RUNNING and lost.lease_token == "someone-else"
    assert lost.result is None
    assert JobAttempt.objects.filter(job=lost).count() == 1  # the log keeps the late call


def test_retry_later_backs_off_then_dead_letters(user, echo_endpoint, settings):
    settings.LLMQUEUE = {"BACKOFF_BASE_S": 10.0, "BACKOFF_CAP_S": 20.0}
    job = job_submit(owner=user, spec=chat_spec(max_attempts=2))[0]
    (c,) = claim()
    before = timezone.now()
    record(result(c, outcome=Outcome.RETRY, error="HTTP 503: busy", http_status=503))
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.error == "HTTP 503: busy"
    assert before <= job.available_at <= before + dt.timedelta(seconds=10.5)
    Job.objects.filter(pk=job.pk).update(available_at=timezone.now())
    (c2,) = claim()
    assert c2.attempt == 2
    record(result(c2, outcome=Outcome.RETRY, error="HTTP 503: busy"))
    job.refresh_from_db()
    assert job.status == Status.DEAD
    assert job.error == "gave up after 2 attempts; last error: HTTP 503: busy"
    assert job.finished_at is not None


def test_retry_after_sets_the_next_due_time(user, echo_endpoint, settings):
    settings.LLMQUEUE = {"BACKOFF_BASE_S": 0.01, "BACKOFF_CAP_S": 0.01}
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    before = timezone.now()
    record(result(c, outcome=Outcome.RETRY, retry_after=30.0, http_status=429))
    job.refresh_from_db()
    assert job.available_at >= before + dt.timedelta(seconds=29.9)


def test_rejected_goes_straight_to_dead_letters(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    record(result(c, outcome=Outcome.REJECTED, error="HTTP 400: bad max_tokens", http_status=400))
    job.refresh_from_db()
    assert (
        job.status == Status.DEAD and job.attempts == 1 and job.error == "HTTP 400: bad max_tokens"
    )


def test_cancel_only_from_queued(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    job_cancel(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    with pytest.raises(TransitionError) as err:
        job_cancel(job_id=job.pk)
    assert err.value.status == Status.CANCELLED
    running = job_submit(owner=user, spec=chat_spec())[0]
    claim()
    with pytest.raises(TransitionError):
        job_cancel(job_id=running.pk)


def test_retry_resets_a_dead_letter(user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    record(result(c, outcome=Outcome.REJECTED, error="nope"))
    job_retry(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error, job.finished_at) == (Status.QUEUED, 0, "", None)
    with pytest.raises(TransitionError):
        job_retry(job_id=job.pk)  # queued is not retryable


def test_reap_requeues_expired_leases_and_dead_letters_the_last_attempt(user, echo_endpoint):
    a = job_submit(owner=user, spec=chat_spec())[0]
    b = job_submit(owner=user, spec=chat_spec(max_attempts=1))[0]
    claim()
    assert jobs_reap() == 0  # leases still live
    Job.objects.update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert jobs_reap() == 2
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.status == Status.QUEUED and a.attempts == 1
    assert b.status == Status.DEAD and "worker died" in b.error
    assert set(JobAttempt.objects.values_list("outcome", flat=True)) == {Outcome.LOST}


def test_renew_extends_only_live_claims(user, echo_endpoint, settings):
    job_submit(owner=user, spec=chat_spec())
    (c,) = claim()
    settings.LLMQUEUE = {"LEASE_S": 600.0}
    assert jobs_renew(tokens=[c.token, "other"]) == 1
    assert Job.objects.get().lease_expires_at > timezone.now() + dt.timedelta(seconds=500)
