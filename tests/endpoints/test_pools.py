"""Dispatch: which endpoints a claim may use (breaker, health, probation) and what they learn."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction
from django.utils import timezone

from llmqueue.calls.types import CallOutcome
from llmqueue.endpoints.health import endpoint_health_record
from llmqueue.endpoints.pools import breaker_of, breaker_reset, endpoints_learn
from llmqueue.jobs import job_submit, jobs_record
from llmqueue.models import Endpoint, Job, Outcome, Status
from llmqueue.policies.breaker import Phase
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


def claim(limit: int = 100):
    with transaction.atomic():
        return jobs_claim(limit=limit)


def finish(claims, *, health: CallOutcome, outcome=Outcome.SUCCESS, spent=True, status=200):
    results = [
        attempt(
            c,
            started_at=timezone.now(),
            duration_ms=50.0,
            outcome=outcome,
            http_status=status,
            health=health,
            spent=spent,
            body={} if outcome == Outcome.SUCCESS else None,
        )
        for c in claims
    ]
    with transaction.atomic():
        jobs_record(results)
        endpoints_learn(r.call for r in results)


def submit(user, n: int) -> list[Job]:
    return [job_submit(owner=user, spec=chat_spec(str(i)))[0] for i in range(n)]


def test_a_new_endpoint_is_on_probation_until_its_first_success(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 3}
    make_endpoint(max_concurrency=50)
    submit(user, 20)
    first = claim()
    assert len(first) == 3  # never more calls at risk than it takes to trip the breaker
    finish(first[:1], health=CallOutcome.SUCCESS)
    assert len(claim()) == 17  # proven: full room


def test_a_dead_endpoint_costs_at_most_the_threshold_then_opens(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 3, "BREAKER_OPEN_S": 60}
    ep = make_endpoint(max_concurrency=50)
    submit(user, 20)
    calls = claim()
    assert len(calls) == 3
    finish(calls, health=CallOutcome.FAILURE, outcome=Outcome.RETRY, spent=False, status=None)
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.OPEN
    Job.objects.update(available_at=timezone.now())
    assert claim() == []
    # connection refused: the attempts were given back; the jobs wait, spending nothing
    assert set(Job.objects.values_list("attempts", flat=True)) == {0}
    assert Job.objects.filter(status=Status.QUEUED).count() == 20


def test_when_the_wait_ends_exactly_k_probes_then_success_closes(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 1, "BREAKER_PROBES": 2, "BREAKER_OPEN_S": 0.2}
    ep = make_endpoint(max_concurrency=50)
    submit(user, 10)
    finish(claim(), health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=503)
    Job.objects.update(available_at=timezone.now())
    assert claim() == []
    time.sleep(0.25)
    probes = claim()
    assert len(probes) == 2
    assert claim() == []  # no third probe while two are out
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.HALF_OPEN
    finish(probes, health=CallOutcome.SUCCESS)
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.CLOSED


def test_a_failed_probe_reopens_with_a_doubled_wait(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 1, "BREAKER_OPEN_S": 0.2, "BREAKER_OPEN_CAP_S": 10}
    ep = make_endpoint()
    submit(user, 5)
    finish(claim(), health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=503)
    time.sleep(0.25)
    Job.objects.update(available_at=timezone.now())
    probe = claim()
    assert len(probe) == 1
    finish(probe, health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=503)
    ep.refresh_from_db()
    state = breaker_of(ep)
    assert state.phase == Phase.OPEN and state.reopen_count == 1
    assert state.open_until - state.opened_at == pytest.approx(0.4)


def test_a_passing_health_check_ends_an_open_wait_and_a_probe_goes(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 1, "BREAKER_OPEN_S": 300, "BREAKER_OPEN_CAP_S": 300}
    ep = make_endpoint()
    submit(user, 5)
    finish(claim(), health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=503)
    Job.objects.update(available_at=timezone.now())
    endpoint_health_record(endpoint_id=ep.pk, ok=False, error="down")
    assert claim() == []  # a failed check changes nothing: 300 s to wait
    endpoint_health_record(endpoint_id=ep.pk, ok=True)
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.HALF_OPEN
    probe = claim()
    assert len(probe) == 1  # one probe, not the whole queue
    finish(probe, health=CallOutcome.SUCCESS)
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.CLOSED


def test_a_passing_check_leaves_an_unhealthy_endpoints_breaker_open(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 1, "BREAKER_OPEN_S": 300, "HEALTH_HEALTHY_AFTER": 2}
    ep = make_endpoint()
    submit(user, 1)
    finish(claim(), health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=503)
    Endpoint.objects.filter(pk=ep.pk).update(healthy=False)
    endpoint_health_record(endpoint_id=ep.pk, ok=True)  # one good check of the two it needs
    ep.refresh_from_db()
    assert (ep.healthy, ep.breaker_state) == (False, Phase.OPEN)
    endpoint_health_record(endpoint_id=ep.pk, ok=True)
    ep.refresh_from_db()
    assert (ep.healthy, ep.breaker_state) == (True, Phase.HALF_OPEN)


def test_429_does_not_trip_the_breaker(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 2}
    ep = make_endpoint()
    submit(user, 5)
    finish(claim(), health=CallOutcome.NEUTRAL, outcome=Outcome.RETRY, status=429)
    ep.refresh_from_db()
    assert ep.breaker_state == Phase.CLOSED


def test_unhealthy_and_disabled_endpoints_take_nothing(user):
    sick = make_endpoint(healthy=False)
    off = make_endpoint(enabled=False)
    ok = make_endpoint()
    submit(user, 5)
    assert {c.target.id for c in claim()} == {ok.pk}
    assert sick.pk != ok.pk != off.pk


def test_reset_closes_an_open_breaker(user, settings):
    settings.LLMQUEUE = {"BREAKER_FAILURES": 1, "BREAKER_OPEN_S": 300}
    ep = make_endpoint()
    submit(user, 3)
    finish(claim(limit=1), health=CallOutcome.FAILURE, outcome=Outcome.RETRY, status=500)
    Job.objects.update(available_at=timezone.now())
    assert claim() == []
    assert breaker_reset(endpoint_ids=[ep.pk]) == 1
    assert len(claim()) >= 1


def test_latency_and_failures_are_learned(user):
    ep = make_endpoint()
    submit(user, 2)
    finish(claim(), health=CallOutcome.SUCCESS)
    ep.refresh_from_db()
    assert ep.latency_ms == pytest.approx(50.0) and ep.recent_calls > 0 and ep.recent_failures == 0


def test_least_in_flight_prefers_the_idle_endpoint(user, settings):
    settings.LLMQUEUE = {"BALANCER": "least_in_flight"}
    busy = make_endpoint(name="busy", max_concurrency=100)
    idle = make_endpoint(name="idle", max_concurrency=100)
    for e in (busy, idle):  # both proven, no probation
        Endpoint.objects.filter(pk=e.pk).update(breaker={"window": "s"})
    submit(user, 40)
    # 30 calls already running on "busy" (another drain's)
    Job.objects.filter(pk__in=Job.objects.values("pk")[:30]).update(
        status=Status.RUNNING,
        endpoint=busy,
        lease_expires_at=timezone.now() + dt.timedelta(minutes=1),
    )
    picked = [c.target.id for c in claim()]
    assert picked.count(idle.pk) >= 9  # of 10: two random choices, weight/(in_flight+1)


def test_latency_fades_while_an_endpoint_gets_no_calls(settings):
    from llmqueue.endpoints.pools import latency_now

    settings.LLMQUEUE = {"LATENCY_TAU_S": 10.0}
    ep = make_endpoint(latency_ms=1000.0, latency_at=100.0)
    assert latency_now(ep, 100.0) == pytest.approx(1000.0)
    assert latency_now(ep, 110.0) == pytest.approx(1000.0 / 2.718281828, rel=1e-6)
    assert latency_now(ep, 200.0) < 1.0  # long idle: tried again, not shunned forever
