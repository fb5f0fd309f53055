"""Load balancing, health and breakers end to end: real cluster, real stand-in endpoints."""

from __future__ import annotations

import time

import pytest
from django.db.models import Count
from django.utils import timezone

from llmqueue.endpoints.pools import breaker_of
from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Endpoint, Job, JobAttempt, Status
from llmqueue.policies.breaker import Phase
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import StandInProcess, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def done(n: int) -> bool:
    return Job.objects.filter(status__in=[Status.SUCCEEDED, Status.DEAD]).count() == n


def attempts_by_endpoint() -> dict[str, int]:
    return dict(JobAttempt.objects.values_list("endpoint_name").annotate(n=Count("id")).order_by())


@pytest.fixture
def three_standins():
    started = [StandInProcess() for _ in range(3)]
    yield started
    for s in started:
        s.stop()


def test_weighted_shares_are_exact(cluster, three_standins):
    owner = make_user()
    for i, (s, weight) in enumerate(zip(three_standins, [1, 2, 3], strict=True)):
        make_endpoint(name=f"w{weight}", base_url=s.base_url, weight=weight, max_concurrency=1000)
        assert i == weight - 1
    for chunk in range(6):
        jobs_submit_many(owner=owner, specs=[chat_spec(f"{chunk}-{i}") for i in range(1000)])
    cluster(LLMQUEUE_DRAINS_PER_HOST="2")
    wait_until(lambda: done(6000), timeout=180, what="6000 jobs")
    shares = attempts_by_endpoint()
    total = sum(shares.values())
    assert total == 6000
    for weight in (1, 2, 3):
        assert abs(shares[f"w{weight}"] / total - weight / 6) < 0.02, shares
    # and the stand-ins agree with the attempt log
    assert sorted(len(s.calls()) for s in three_standins) == sorted(shares.values())


def test_a_hard_down_endpoint_costs_little_and_comes_back(cluster, three_standins):
    owner = make_user()
    up = three_standins[:2]
    down_port = free_port()  # nothing listens: connection refused
    for i, s in enumerate(up):
        make_endpoint(name=f"up{i}", base_url=s.base_url, max_concurrency=100)
    make_endpoint(name="down", base_url=f"http://127.0.0.1:{down_port}/v1", max_concurrency=100)
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i)) for i in range(1000)])
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i)) for i in range(1000, 2000)])
    started = time.time()
    cluster(
        LLMQUEUE_BREAKER_OPEN_S="1", LLMQUEUE_BREAKER_OPEN_CAP_S="2", LLMQUEUE_HEALTH_INTERVAL_S="1"
    )
    wait_until(lambda: done(2000), timeout=120, what="2000 jobs")
    assert Job.objects.filter(status=Status.DEAD).count() == 0
    elapsed = time.time() - started
    # N + K calls for the first period, K for each re-open (every >= 1 s) after it
    to_down = attempts_by_endpoint().get("down", 0)
    assert 1 <= to_down <= 5 + 1 * (1 + int(elapsed)), (to_down, elapsed)
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}  # refused calls refunded

    # it comes back: health, then a probe, close the breaker; it takes traffic again
    revived = StandInProcess(port=down_port)
    back = timezone.now()
    try:
        # A check that passed after it came back: that check also ends the breaker's open
        # wait (the endpoint may have stayed healthy, its checks failing too few in a row).
        def checked_healthy() -> bool:
            e = Endpoint.objects.get(name="down")
            return e.healthy and e.health_successes > 0 and e.last_check_at > back

        wait_until(checked_healthy, timeout=20, what="healthy again")
        jobs_submit_many(owner=owner, specs=[chat_spec(f"after {i}") for i in range(300)])
        wait_until(lambda: done(2300), timeout=60, what="300 more jobs")
        assert Endpoint.objects.get(name="down").breaker_state == "closed"
        assert len(revived.calls()) > 0
    finally:
        revived.stop()


def test_an_endpoint_back_after_its_open_wait_reached_the_cap_takes_traffic_at_once(
    cluster, standin
):
    """Down long enough for the breaker's open wait to reach its cap (4, 8, then 16 s), then
    back: it takes calls within two health intervals, not when the 16 s wait ends."""
    interval = 2.0
    owner = make_user()
    ep = make_endpoint(name="sick", base_url=standin.base_url)
    standin.control(status=503, models_status=503)  # every call and every check fails
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i), max_attempts=20) for i in range(50)])
    cluster(
        LLMQUEUE_BREAKER_OPEN_S="4",
        LLMQUEUE_BREAKER_OPEN_CAP_S="16",
        LLMQUEUE_HEALTH_INTERVAL_S=str(interval),
        # Its checks fail, but it stays in the pool: its probes go, fail, and double the wait
        # (the way an endpoint whose checks fail now and then reaches the cap).
        LLMQUEUE_HEALTH_UNHEALTHY_AFTER="1000",
    )

    def reopened_at_the_cap() -> bool:
        state = breaker_of(Endpoint.objects.get(pk=ep.pk))
        return state.phase is Phase.OPEN and state.reopen_count >= 2  # 4 * 2**2 = 16 s

    wait_until(reopened_at_the_cap, timeout=60, what="the open wait to reach its cap")
    back = time.time()
    standin.control(status=0, models_status=0)
    open_until = breaker_of(Endpoint.objects.get(pk=ep.pk)).open_until or 0.0
    assert open_until - back > 2 * interval + 5  # the wait alone would keep it out far longer

    def first_good_call() -> float | None:
        return min((t for t, _, status, _ in standin.calls() if status == 200), default=None)

    first = wait_until(first_good_call, timeout=60, what="a call to the recovered endpoint")
    assert first - back <= 2 * interval, (first - back, open_until - back)
    wait_until(lambda: done(50), timeout=60, what="50 jobs")
    assert Job.objects.filter(status=Status.SUCCEEDED).count() == 50
    assert Endpoint.objects.get(pk=ep.pk).breaker_state == "closed"


def test_all_endpoints_down_for_30s_then_back(cluster):
    owner = make_user()
    ports = [free_port() for _ in range(2)]
    for i, port in enumerate(ports):
        make_endpoint(name=f"ep{i}", base_url=f"http://127.0.0.1:{port}/v1")
    jobs_submit_many(owner=owner, specs=[chat_spec(str(i), max_attempts=2) for i in range(200)])
    cluster(
        LLMQUEUE_BREAKER_OPEN_S="1", LLMQUEUE_BREAKER_OPEN_CAP_S="4", LLMQUEUE_HEALTH_INTERVAL_S="1"
    )
    time.sleep(30)
    assert Job.objects.filter(status=Status.DEAD).count() == 0
    assert Job.objects.filter(status=Status.QUEUED).count() == 200  # waiting, not dying
    revived = [StandInProcess(port=p) for p in ports]
    try:
        wait_until(lambda: done(200), timeout=60, what="recovery")
        assert Job.objects.filter(status=Status.SUCCEEDED).count() == 200
    finally:
        for s in revived:
            s.stop()


def test_health_flips_within_15s_each_way(cluster, standin):
    make_endpoint(name="flaky", base_url=standin.base_url)
    cluster()  # default interval and thresholds
    wait_until(lambda: Endpoint.objects.get().last_check_at is not None, timeout=15, what="a check")
    standin.control(models_status=503)
    wait_until(lambda: not Endpoint.objects.get().healthy, timeout=15, what="unhealthy")
    assert "HTTP 503" in Endpoint.objects.get().last_error
    standin.control(models_status=0)
    wait_until(lambda: Endpoint.objects.get().healthy, timeout=15, what="healthy again")
