"""Rate limits and fairness end to end: real cluster, real stand-in, its own request log."""

from __future__ import annotations

import pytest

from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Job, JobAttempt, Status
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def busiest_second(times: list[float]) -> int:
    """The most calls in any one-second window (t - 1, t]."""
    times = sorted(times)
    most = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def test_rpm_limit_is_paced_across_two_workers(cluster, standin):
    """rpm_limit 600 with the default burst (1 s of refill: 10 calls): no second holds more
    than 10 + 10 calls at the stand-in, from the first second on, and the pace is 10/s."""
    owner = make_user()
    make_endpoint(base_url=standin.base_url, rpm_limit=600, max_concurrency=200)
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i)) for i in range(300)])
    cluster(LLMQUEUE_DRAINS_PER_HOST="2")
    wait_until(lambda: len(standin.calls()) >= 300, timeout=120, what="300 calls")
    calls = sorted(t for t, *_ in standin.calls())
    burst = 10
    assert busiest_second(calls) <= 10 + burst, busiest_second(calls)
    # the sustained rate is the limit: after the first second, 10/s within 5%
    steady = [t for t in calls if t >= calls[0] + 1.0]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 9.5 <= rate <= 10.5, rate
    assert not Job.objects.filter(status=Status.DEAD).exists()
    assert set(Job.objects.filter(status=Status.SUCCEEDED).values_list("attempts", flat=True)) == {
        1
    }


def test_429_with_retry_after_pauses_the_endpoint(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=1)
    standin.control(latency_ms=20, fail_next=1, fail_status=429, retry_after="2")
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i)) for i in range(20)])
    cluster()
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() == 20,
        timeout=60,
        what="20 jobs",
    )
    calls = standin.calls()
    (i429,) = [i for i, c in enumerate(calls) if c[2] == 429]
    assert calls[i429 + 1][0] - calls[i429][0] >= 2.0 - 0.05  # nothing reached it for 2 s
    # the job that got the 429 did not spend an attempt on it, nor did any job on the wait
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    assert JobAttempt.objects.filter(http_status=429).count() == 1


def test_a_small_user_is_not_starved_by_a_big_backlog(cluster, standin):
    a, b = make_user(), make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=200)
    standin.control(latency_ms=50)
    for chunk in range(5):
        jobs_submit_many(owner=a, specs=[chat_spec(f"a{chunk}-{i}") for i in range(1000)])
    cluster()
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() >= 300,
        timeout=60,
        what="A's backlog to flow",
    )
    a_done_before = Job.objects.filter(owner=a, status=Status.SUCCEEDED).count()
    jobs_submit_many(owner=b, specs=[chat_spec(f"b{i}") for i in range(20)])
    wait_until(
        lambda: Job.objects.filter(owner=b, status=Status.SUCCEEDED).count() == 20,
        timeout=60,
        what="B's 20",
    )
    a_done_meanwhile = Job.objects.filter(owner=a, status=Status.SUCCEEDED).count() - a_done_before
    # What of A's may finish before B's last job: what the drain held when B came (64 in
    # flight and a reserve of 32), A's turns between B's 20, and A's calls that end while B's
    # last ones run (~64 at 50 ms), seen a step late. Measured 158-196. Waiting behind A's
    # backlog would be thousands.
    assert a_done_meanwhile < 300, a_done_meanwhile
