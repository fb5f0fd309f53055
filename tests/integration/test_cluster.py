"""The queue end to end: a real qcluster subprocess, a real stand-in HTTP endpoint, a real DB."""

from __future__ import annotations

import itertools
import time

import pytest
from django.db.models import Count, Min, Q
from django.test import Client
from django.urls import reverse

from llmqueue import metrics
from llmqueue.jobs import JobSpec, job_submit, jobs_submit_many
from llmqueue.models import Job, JobAttempt, Outcome, Status
from tests.factories import chat_payload, chat_spec, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSED = "llmqueue_places_passed_total"


def statuses() -> dict[str, int]:
    return dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by())


def all_finished(n: int) -> bool:
    return (
        Job.objects.filter(status__in=[Status.SUCCEEDED, Status.DEAD, Status.CANCELLED]).count()
        == n
    )


def test_a_thousand_jobs_all_succeed(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=100)
    jobs_submit_many(owner=owner, specs=[chat_spec(f"job {i}") for i in range(1000)])
    c = cluster(LLMQUEUE_DRAINS_PER_HOST="2")
    wait_until(lambda: all_finished(1000), timeout=120, what=f"1000 jobs to finish ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 1000}
    # every job made exactly one call, and answered with its own prompt
    assert len(standin.calls()) == 1000
    assert JobAttempt.objects.count() == 1000
    job = Job.objects.get(payload__messages__0__content="job 7")
    assert job.result["choices"][0]["message"]["content"] == "echo: job 7"
    assert "Traceback" not in c.output()


def test_high_priority_job_overtakes_a_backlog(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=2)
    standin.control(latency_ms=150)
    jobs_submit_many(owner=owner, specs=[chat_spec(f"low {i}", priority=1) for i in range(30)])
    cluster()
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() >= 4,
        timeout=30,
        what="the backlog to flow",
    )
    urgent, _ = job_submit(owner=owner, spec=chat_spec("urgent", priority=9))
    wait_until(
        lambda: Job.objects.get(pk=urgent.pk).status == Status.SUCCEEDED,
        timeout=30,
        what="the urgent job",
    )
    urgent.refresh_from_db()
    overtook = Job.objects.filter(
        priority=1, started_at__gt=urgent.created_at, started_at__lt=urgent.started_at
    )
    # At most one claim that was already under way when the urgent job committed may win.
    assert overtook.count() <= 1
    still_waiting = Job.objects.filter(
        Q(started_at__isnull=True) | Q(started_at__gt=urgent.started_at), priority=1
    ).count()
    assert still_waiting >= 20
    assert standin.log()["max_in_flight"] <= 2  # never more than the endpoint's max_concurrency


def test_two_drains_at_a_capped_endpoint_pass_places_on_and_never_exceed_the_cap(cluster, standin):
    """Each drain (4 places) takes of the endpoint's 6 places only those it can call with, and
    holds more jobs behind it, each started in the place of one of its own calls that ends:
    never more than 6 calls out, while 300 jobs go through exactly once each."""
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=6)
    standin.control(latency_ms=40)
    passed = metrics.event_totals(PASSED)[PASSED]
    jobs_submit_many(owner=owner, specs=[chat_spec(f"capped {i}") for i in range(300)])
    c = cluster(LLMQUEUE_DRAINS_PER_HOST="2", LLMQUEUE_DRAIN_CONCURRENCY="4")
    wait_until(lambda: all_finished(300), timeout=120, what=f"300 jobs to finish ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 300}
    assert len(standin.calls()) == 300
    assert standin.log()["max_in_flight"] <= 6
    assert metrics.event_totals(PASSED)[PASSED] > passed
    assert not Job.objects.filter(endpoint__isnull=True).exists()  # each ran on its endpoint
    assert "Traceback" not in c.output()


def test_kill_9_mid_flight_loses_nothing(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=50)
    standin.control(latency_ms=300)
    jobs_submit_many(owner=owner, specs=[chat_spec(f"crash {i}") for i in range(300)])
    first = cluster()
    wait_until(
        lambda: Job.objects.filter(status=Status.RUNNING).count() >= 20,
        timeout=30,
        what="calls in flight",
    )
    first.kill()
    in_flight_at_kill = Job.objects.filter(status=Status.RUNNING).count()
    assert in_flight_at_kill > 0
    cluster()
    wait_until(lambda: all_finished(300), timeout=120, what=f"recovery ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 300}
    lost = JobAttempt.objects.filter(outcome=Outcome.LOST).count()
    assert lost == in_flight_at_kill  # each job cut off by the kill was logged, then run again
    assert not Job.objects.filter(lease_token__isnull=False).exists()


def test_503_dead_letter_then_retry_from_admin_and_api(cluster, standin, client: Client):
    owner = make_user()
    admin = make_user(staff=True)
    make_endpoint(base_url=standin.base_url)
    standin.control(status=503)
    a, _ = job_submit(owner=owner, spec=chat_spec("a", max_attempts=4))
    b, _ = job_submit(owner=owner, spec=chat_spec("b", max_attempts=4))
    # This is about a job's own retries: keep the endpoint's breaker out of the way.
    cluster(LLMQUEUE_BREAKER_FAILURES="1000", LLMQUEUE_BREAKER_WINDOW="1000")
    wait_until(lambda: all_finished(2), timeout=60, what="both to become dead letters")
    for job in (a, b):
        job.refresh_from_db()
        assert job.status == Status.DEAD and job.attempts == 4
        assert job.error == "gave up after 4 attempts; last error: HTTP 503: stand-in says 503"
        starts = list(
            JobAttempt.objects.filter(job=job)
            .order_by("number")
            .values_list("started_at", flat=True)
        )
        assert len(starts) == 4
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        # full jitter within a doubling window (base 0.05 s, cap 0.4 s), plus the poll interval
        for n, gap in enumerate(gaps, start=1):
            assert 0 <= gap <= min(0.4, 0.05 * 2 ** (n - 1)) + 0.6, gaps
    all_gaps = JobAttempt.objects.values_list("job_id", "started_at")
    assert len(all_gaps) == 8

    standin.control(status=0)
    # the admin's "Retry selected" action, as a real POST
    client.force_login(admin)
    response = client.post(
        reverse("admin:llmqueue_deadletter_changelist"),
        {"action": "retry_selected", "_selected_action": [a.pk]},
    )
    assert response.status_code == 302
    # and the API's retry
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(owner)
    assert api.post(f"/api/jobs/{b.pk}/retry/").status_code == 200
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() == 2,
        timeout=30,
        what="retried jobs",
    )
    a.refresh_from_db()
    assert a.attempts == 1 and a.result["choices"][0]["message"]["content"] == "echo: a"


def test_400_is_one_attempt_and_keeps_the_upstream_message(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    standin.control(status=400, message="max_tokens is too large: 999999")
    job, _ = job_submit(
        owner=owner, spec=JobSpec(kind="chat", payload=chat_payload(max_tokens=999999))
    )
    cluster()
    wait_until(lambda: all_finished(1), timeout=30, what="the dead letter")
    job.refresh_from_db()
    assert job.status == Status.DEAD and job.attempts == 1
    assert job.error == "HTTP 400: max_tokens is too large: 999999"
    assert len(standin.calls()) == 1


def test_retries_fall_due_and_are_picked_up_promptly(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    standin.control(fail_next=1, fail_status=503)
    job, _ = job_submit(owner=owner, spec=chat_spec("flaky"))
    cluster(LLMQUEUE_BACKOFF_BASE_S="1.0", LLMQUEUE_BACKOFF_CAP_S="1.0")
    wait_until(lambda: all_finished(1), timeout=30, what="the flaky job")
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.attempts == 2
    first, second = JobAttempt.objects.filter(job=job).order_by("number")
    assert first.outcome == Outcome.RETRY and second.outcome == Outcome.SUCCESS
    due = first.started_at.timestamp() + first.duration_ms / 1000
    # picked up within about a second of falling due (the window is at most 1 s)
    assert second.started_at.timestamp() - due <= 1.0 + 1.0


def test_idle_cluster_wakes_on_submit(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    cluster()
    time.sleep(3)  # let the start-up drain linger out
    job, _ = job_submit(owner=owner, spec=chat_spec("wake up"))
    wait_until(lambda: all_finished(1), timeout=15, what="the job to run after a wake")
    first_call = JobAttempt.objects.filter(job=job).aggregate(t=Min("started_at"))["t"]
    assert first_call is not None
