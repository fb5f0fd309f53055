"""The stats API, the dashboard's data and the /metrics scrape cost the same whatever the
history holds (finished jobs): counted in SQLite VM steps, as ``test_queue_scale`` does, with
a history of ``SMALL`` finished jobs and with one ten times longer. (Dead letters are not
history but the operators' queue, counted from their own index like the queued jobs: their
number is the same in both.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import RequestFactory
from django.utils import timezone

from llmqueue import metrics
from llmqueue.db.rows import InstancesInsert
from llmqueue.jobs import jobs_submit_many
from llmqueue.jobs.selectors import queue_stats
from llmqueue.models import Job, Status
from llmqueue.web.views import dashboard_data_of
from tests.factories import chat_spec, make_endpoint, make_user
from tests.jobs.test_queue_scale import PER_STEP, vm_steps

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner, without stats"),
]

SMALL = 400


def history(owner: Any, n: int, *, statuses: tuple[Status, ...]) -> None:
    """n more jobs that finished days ago, of these statuses in turn, written directly."""
    at = timezone.now() - dt.timedelta(days=2)
    jobs = [
        Job(
            owner=owner,
            model="echo",
            payload={"model": "echo", "messages": [{"role": "user", "content": str(i)}]},
            status=statuses[i % len(statuses)],
            created_at=at,
            started_at=at,
            finished_at=at,
            error="refused",
        )
        for i in range(n)
    ]
    with transaction.atomic():
        InstancesInsert(jobs).run(jobs)


def test_stats_reads_do_not_grow_with_history() -> None:
    make_endpoint(max_concurrency=1000)
    owner = make_user()
    staff = RequestFactory().get("/dashboard/data/")
    staff.user = make_user(staff=True)
    jobs_submit_many(owner=owner, specs=[chat_spec() for _ in range(50)])  # a queue
    operations: dict[str, Callable[[], Any]] = {
        "stats API": queue_stats,
        "dashboard data": lambda: dashboard_data_of(staff),
        "scrape": lambda: list(metrics.STATE_REGISTRY.collect()),
    }

    def measure() -> dict[str, int]:
        steps = {}
        for name, run in operations.items():
            run()  # the dashboard keeps past minutes; measure a poll, not the first
            with vm_steps() as counted:
                run()
            steps[name] = counted[0]
        return steps

    history(owner, 20, statuses=(Status.DEAD,))
    finished = (*[Status.SUCCEEDED] * 9, Status.CANCELLED)
    history(owner, SMALL, statuses=finished)
    short = measure()
    history(owner, 9 * SMALL, statuses=finished)
    long = measure()
    assert Job.objects.filter(status__in=finished).count() == 10 * SMALL
    grew = {
        name: f"{short[name]} -> {long[name]}"
        for name in operations
        if long[name] > 2 * short[name] + 20
    }
    assert not grew, f"VM steps (x{PER_STEP}) grew with the history: {grew}"
