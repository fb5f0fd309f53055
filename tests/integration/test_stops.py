"""Stops that finish: every way a process manager stops `manage.py llmqueue_worker` stops the
whole cluster within STOP_GRACE_S + 5 s, and the calls it cut off run again, attempt refunded."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db.models import Count

from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Job, JobAttempt, Outcome, Status
from llmqueue.worker.supervise import _processes
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

GRACE_S = 3.0


def statuses() -> dict[str, int]:
    return dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by())


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group: a worker orphaned by its sentinel's
    death is still in it, so this sees every process the cluster ever started."""
    return [pid for pid, _, group, state in _processes() if group == pgid and state != "Z"]


@pytest.mark.parametrize(
    "how",
    ["SIGTERM to the main process", "SIGTERM to the group", "SIGINT to the group"],
)
def test_a_stop_signal_ends_the_cluster_within_the_grace_and_refunds_cut_off_calls(
    cluster, standin, how
):
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=100)
    c = cluster(LLMQUEUE_STOP_GRACE_S=str(GRACE_S), LLMQUEUE_DRAIN_CONCURRENCY="100")
    # One success first: a new endpoint is on probation (a few calls at a time) until then.
    jobs_submit_many(owner=owner, specs=[chat_spec("warm")])
    wait_until(lambda: statuses() == {Status.SUCCEEDED: 1}, timeout=60, what="a first success")
    # No call finishes within the grace; all have ended before the next test's.
    standin.control(latency_ms=(GRACE_S + 7) * 1000)
    wait_until(lambda: standin.log()["in_flight"] == 0, timeout=30, what="an idle stand-in")
    jobs_submit_many(owner=owner, specs=[chat_spec(f"stop {i}") for i in range(100)])
    wait_until(
        lambda: statuses().get(Status.RUNNING) == 100 and standin.log()["in_flight"] == 100,
        timeout=60,
        what="100 calls in flight",
    )
    assert c.proc is not None
    pgid = c.proc.pid
    started = time.monotonic()
    if how == "SIGTERM to the main process":
        os.kill(c.proc.pid, signal.SIGTERM)
    elif how == "SIGTERM to the group":
        os.killpg(pgid, signal.SIGTERM)
    else:
        os.killpg(pgid, signal.SIGINT)
    wait_until(
        lambda: not group_alive(pgid), timeout=GRACE_S + 5, interval=0.05, what="the cluster"
    )
    took = time.monotonic() - started
    assert took >= GRACE_S - 0.5, "the calls in flight were not given their grace"
    assert c.proc.wait(1) == 0, c.output()
    # Nothing the stopped cluster claimed stays claimed: all went back, attempt refunded.
    assert statuses() == {Status.SUCCEEDED: 1, Status.QUEUED: 100}
    assert not Job.objects.filter(status=Status.QUEUED, attempts__gt=0).exists()
    standin.control(latency_ms=0)
    cluster()
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() == 101,
        timeout=60,
        what="the jobs after the restart",
    )
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    assert JobAttempt.objects.count() == 101
    assert took < GRACE_S + 5


def test_a_killed_cluster_costs_seconds_not_a_lease(cluster, standin):
    """kill -9 mid-flight: the next cluster gives the dead drains' claims back as it starts
    (their pids are gone), long before their 60 s leases would have lapsed."""
    owner = make_user()
    make_endpoint(base_url=standin.base_url, max_concurrency=50)
    env = {"LLMQUEUE_LEASE_S": "60", "LLMQUEUE_DRAINS_PER_HOST": "2"}
    first = cluster(**env)
    jobs_submit_many(owner=owner, specs=[chat_spec("warm")])
    wait_until(lambda: statuses() == {Status.SUCCEEDED: 1}, timeout=60, what="a first success")
    standin.control(latency_ms=1000)
    jobs_submit_many(owner=owner, specs=[chat_spec(f"crash {i}") for i in range(200)])
    wait_until(lambda: statuses().get(Status.RUNNING, 0) >= 40, timeout=60, what="calls in flight")
    first.kill()
    cut_off = set(Job.objects.filter(status=Status.RUNNING).values_list("pk", flat=True))
    assert cut_off
    cluster(**env)
    restarted = time.monotonic()
    wait_until(
        lambda: not Job.objects.filter(pk__in=cut_off, status=Status.RUNNING, attempts=1).exists(),
        timeout=20,
        what="the killed cluster's claims to come back",
    )
    assert time.monotonic() - restarted < 15  # a lease is 60 s
    wait_until(
        lambda: statuses() == {Status.SUCCEEDED: 201}, timeout=60, what=f"all ({statuses()})"
    )
    lost = JobAttempt.objects.filter(outcome=Outcome.LOST)
    assert set(lost.values_list("job_id", flat=True)) == cut_off
