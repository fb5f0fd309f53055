"""The queue's hot statements cost the same however many jobs wait.

SQLite's planner has no statistics unless ANALYZE ran, and then takes an equality on any
indexed column for a selective term: with a plain index on ``status``, "the leader of this
cache key" and "the next due job" walked every queued job (130-260 ms a statement at 300,000
queued), under the write lock that the drains wait for. This test counts the steps of
SQLite's virtual machine (its progress handler) that each operation takes with a queue of
``SMALL`` jobs and with one ten times longer: a walk of the queue grows tenfold, a probe of an
index does not. PostgreSQL keeps statistics and plans by them: SQLite only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from llmqueue.jobs import (
    job_submit,
    jobs_reap,
    jobs_record,
    jobs_submit_many,
    queue_has_due,
    queue_next_due,
)
from llmqueue.models import Job, Outcome
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_spec, make_endpoint, make_user

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner, without stats"),
]

SMALL = 300
#: every this many VM instructions, the progress handler counts one step
PER_STEP = 10


@contextlib.contextmanager
def vm_steps() -> Iterator[list[int]]:
    """Count the SQLite VM's instructions (in steps of PER_STEP) run in the block."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0  # go on

    connection.ensure_connection()
    raw = connection.connection
    raw.set_progress_handler(tick, PER_STEP)
    try:
        yield counted
    finally:
        raw.set_progress_handler(None, PER_STEP)


def queue_up(owner: Any, n: int) -> None:
    """n more queued, cacheable, distinct jobs (each a leader of its own cache key)."""
    for start in range(0, n, 1000):
        jobs_submit_many(owner=owner, specs=[chat_spec() for _ in range(min(1000, n - start))])


def claim_and_record() -> None:
    with transaction.atomic():
        claims = jobs_claim(limit=8)
    now = timezone.now()
    with transaction.atomic():
        jobs_record(
            [
                attempt(
                    c,
                    started_at=now,
                    duration_ms=1.0,
                    outcome=Outcome.SUCCESS,
                    http_status=200,
                    body={"choices": [{"message": {"role": "assistant", "content": "hi"}}]},
                )
                for c in claims
            ]
        )


def test_hot_statements_do_not_walk_the_queue() -> None:
    make_endpoint(max_concurrency=1000)
    crowd, me = make_user(), make_user()
    operations: dict[str, Callable[[], Any]] = {
        "submit one": lambda: job_submit(owner=me, spec=chat_spec()),
        "submit 50 in bulk": lambda: jobs_submit_many(
            owner=me, specs=[chat_spec() for _ in range(50)]
        ),
        "claim 8 and record them": claim_and_record,
        "next due": queue_next_due,
        "any due": queue_has_due,
        "reap": jobs_reap,
    }

    def measure() -> dict[str, int]:
        # A claim whose lease lapsed: the reaper has one to requeue each time.
        with transaction.atomic():
            (lapsed, *_) = jobs_claim(limit=1)
        Job.objects.filter(pk=lapsed.job_id).update(
            lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        steps = {}
        for name, run in operations.items():
            with vm_steps() as counted:
                run()
            steps[name] = counted[0]
        return steps

    queue_up(crowd, SMALL)
    short = measure()
    queue_up(crowd, 9 * SMALL)
    long = measure()
    assert Job.objects.filter(status="queued").count() > 10 * SMALL
    grew = {
        name: f"{short[name]} -> {long[name]}"
        for name in operations
        # Index probes grow with the depth of a B-tree, not with its rows: allow 2x and a
        # little, against the 10x of a walk.
        if long[name] > 2 * short[name] + 20
    }
    assert not grew, f"VM steps (x{PER_STEP}) grew with the queue: {grew}"
