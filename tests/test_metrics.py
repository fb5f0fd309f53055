"""llmqueue.metrics: events are counted once their transaction commits, and only when they won."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from llmqueue import metrics
from llmqueue.jobs import (
    job_cancel,
    job_submit,
    jobs_reap,
    jobs_record,
    jobs_retry,
    jobs_submit_many,
)
from llmqueue.models import Job, Outcome, Status
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_spec, make_endpoint, make_user

pytestmark = pytest.mark.django_db


def value(counter, *labels: str) -> float:
    return counter.labels(*labels)._value.get()


def claim(limit: int = 100):
    with transaction.atomic():
        return jobs_claim(limit=limit)


def result(c, outcome=Outcome.SUCCESS, **kw):
    return attempt(c, started_at=timezone.now(), duration_ms=250.0, outcome=outcome, **kw)


def test_submissions_count_on_commit(user, echo_endpoint, django_capture_on_commit_callbacks):
    before = value(metrics.JOBS_SUBMITTED, "chat")
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=chat_spec())
        jobs_submit_many(owner=user, specs=[chat_spec(), chat_spec()])
    assert value(metrics.JOBS_SUBMITTED, "chat") - before == 3
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job_submit(owner=user, spec=chat_spec())
    assert callbacks  # nothing counted until the commit
    assert value(metrics.JOBS_SUBMITTED, "chat") - before == 3


def test_outcomes_attempts_and_waits(user, django_capture_on_commit_callbacks):
    ep = make_endpoint(name="m-ep")
    ok, bad, lost = (job_submit(owner=user, spec=chat_spec())[0] for _ in range(3))
    Job.objects.filter(pk=ok.pk).update(created_at=timezone.now() - dt.timedelta(seconds=30))
    claims = {c.job_id: c for c in claim()}
    # the third job's lease went to another drain meanwhile: its result must count as an
    # attempt, but not as a finished job
    Job.objects.filter(pk=lost.pk).update(lease_token="someone-else")
    before = {
        "succeeded": value(metrics.JOBS_FINISHED, "succeeded"),
        "dead": value(metrics.JOBS_FINISHED, "dead"),
        "attempts": value(metrics.ATTEMPTS, ep.name, "success"),
        "rejected": value(metrics.ATTEMPTS, ep.name, "rejected"),
        "throttled": value(metrics.UPSTREAM_RATE_LIMITED, ep.name),
        "waits": metrics.QUEUE_WAIT_SECONDS._sum.get(),
    }
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs_record(
            [
                result(claims[ok.pk]),
                result(claims[bad.pk], Outcome.REJECTED, http_status=429, error="no"),
                result(claims[lost.pk]),
            ]
        )
    assert value(metrics.JOBS_FINISHED, "succeeded") - before["succeeded"] == 1
    assert value(metrics.JOBS_FINISHED, "dead") - before["dead"] == 1
    assert value(metrics.ATTEMPTS, ep.name, "success") - before["attempts"] == 2
    assert value(metrics.ATTEMPTS, ep.name, "rejected") - before["rejected"] == 1
    assert value(metrics.UPSTREAM_RATE_LIMITED, ep.name) - before["throttled"] == 1
    assert metrics.QUEUE_WAIT_SECONDS._sum.get() - before["waits"] >= 30


def test_a_rolled_back_step_counts_nothing(user, echo_endpoint, django_capture_on_commit_callbacks):
    job = job_submit(owner=user, spec=chat_spec())[0]
    (c,) = claim()
    before = value(metrics.JOBS_FINISHED, "succeeded")
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        jobs_record([result(c)])
        raise RuntimeError("the step failed after recording")
    assert value(metrics.JOBS_FINISHED, "succeeded") == before
    assert Job.objects.get(pk=job.pk).status == Status.RUNNING


def test_cancel_and_reap_count(user, echo_endpoint, django_capture_on_commit_callbacks):
    a = job_submit(owner=user, spec=chat_spec())[0]
    b = job_submit(owner=user, spec=chat_spec(max_attempts=1))[0]
    cancelled = value(metrics.JOBS_FINISHED, "cancelled")
    dead = value(metrics.JOBS_FINISHED, "dead")
    lost = value(metrics.ATTEMPTS, echo_endpoint.name, "lost")
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job_id=a.pk)
        claim()
        Job.objects.filter(pk=b.pk).update(lease_expires_at=timezone.now() - dt.timedelta(1))
        assert jobs_reap() == 1
    assert value(metrics.JOBS_FINISHED, "cancelled") - cancelled == 1
    assert value(metrics.JOBS_FINISHED, "dead") - dead == 1
    assert value(metrics.ATTEMPTS, echo_endpoint.name, "lost") - lost == 1


def test_retry_on_an_endpoint_pins_jobs_of_models_it_serves(user):
    echo = make_endpoint(name="echo-a")
    other = make_endpoint(name="other", served_models=["qwen"])
    a, b = (job_submit(owner=user, spec=chat_spec())[0] for _ in range(2))
    Job.objects.update(status=Status.DEAD)
    assert jobs_retry(job_ids=[a.pk, b.pk], endpoint_id=other.pk) == 0  # serves no echo
    assert jobs_retry(job_ids=[a.pk], endpoint_id=echo.pk) == 1
    assert Job.objects.get(pk=a.pk).pinned_endpoint == echo
    Job.objects.filter(pk=a.pk).update(status=Status.DEAD)
    assert jobs_retry(job_ids=[a.pk]) == 1  # a plain retry lets any endpoint take it again
    assert Job.objects.get(pk=a.pk).pinned_endpoint is None


def test_exposition_parses_and_holds_both_kinds(client):
    text = metrics.exposition().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"llmqueue_jobs_finished", "llmqueue_queue_depth", "llmqueue_endpoint_healthy"} <= names
    assert metrics.event_totals("llmqueue_jobs_finished_total")["llmqueue_jobs_finished_total"] >= 0


def test_an_empty_file_of_a_killed_process_does_not_break_the_scrape():
    # A process killed between creating its file and sizing it leaves it empty for good
    # (prometheus/client_python#1199); the other processes' counts are still served, and the
    # file, whose pid is gone, is compacted away.
    path = os.path.join(metrics.multiprocess_dir(), "counter_999999999.db")
    open(path, "wb").close()
    make_endpoint()
    with transaction.atomic():
        job_submit(owner=make_user(), spec=chat_spec())
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert "llmqueue_jobs_submitted" in families
    assert not os.path.exists(path)


def test_tokens_count_by_endpoint_model_and_kind_from_successful_answers(
    user, django_capture_on_commit_callbacks
):
    ep = make_endpoint(name="tok-ep")
    jobs = [job_submit(owner=user, spec=chat_spec())[0] for _ in range(4)]
    claims = {c.job_id: c for c in claim()}
    first, second, rejected, silent = (claims[j.pk] for j in jobs)

    def tokens(kind: str) -> float:
        return value(metrics.TOKENS, ep.name, "echo", kind)

    before = {"prompt": tokens("prompt"), "completion": tokens("completion")}
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs_record(
            [
                result(first, body={"usage": usage}),
                # an embedding's usage has no completion
                result(second, body={"usage": {"prompt_tokens": 5, "total_tokens": 5}}),
                # a rejected call's body says nothing we count, whatever it holds
                result(rejected, Outcome.REJECTED, http_status=400, body={"usage": usage}),
                # an upstream that reports no usage counts nothing rather than a guess
                result(silent, body={"choices": []}),
            ]
        )
    assert tokens("prompt") - before["prompt"] == 12
    assert tokens("completion") - before["completion"] == 3
    text = metrics.exposition().decode()
    assert 'llmqueue_tokens_total{endpoint="tok-ep",kind="prompt",model="echo"}' in text
