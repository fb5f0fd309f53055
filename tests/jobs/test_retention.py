"""Retention deletes old finished jobs in batches; the lifetime totals do not move."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import types
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from llmqueue.jobs import (
    job_cancel,
    job_retry,
    job_submit,
    jobs_record,
    jobs_submit_many,
)
from llmqueue.jobs.retention import jobs_purge
from llmqueue.jobs.selectors import queue_stats
from llmqueue.jobs.totals import totals_read
from llmqueue.models import TERMINAL, Batch, Job, JobAttempt, JobTotal, Outcome, Status
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_spec

pytestmark = pytest.mark.django_db

ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}


class Clock:
    """timezone.now(), moved by hand: every service reads the time through it."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(timezone, "now", fake)
    yield fake


def run_all(outcomes: dict[int, Outcome]) -> None:
    """Claim every due job and record the outcome given for it (success by default)."""
    with transaction.atomic():
        claims = jobs_claim(limit=100)
    results = []
    for c in claims:
        outcome = outcomes.get(c.job_id, Outcome.SUCCESS)
        body = ANSWER if outcome == Outcome.SUCCESS else None
        status = 200 if outcome == Outcome.SUCCESS else 400
        results.append(attempt(c, outcome=outcome, http_status=status, body=body, error=""))
    with transaction.atomic():
        jobs_record(results)


def by_status() -> dict[str, int]:
    rows = Job.objects.values_list("status").annotate(n=Count("id")).order_by()
    return dict(rows)


def test_old_jobs_go_young_ones_and_dead_letters_stay(
    clock, user, echo_endpoint, web, settings
) -> None:
    settings.LLMQUEUE = {"RETENTION_DAYS": 30, "DEAD_RETENTION_DAYS": 90}
    # Day 0: a batch of five, two of them twins (the second follows the first), one refused
    # (dead) and one cancelled before it ran.
    twin = chat_spec("same question")
    batch, jobs = jobs_submit_many(
        owner=user, specs=[chat_spec(), chat_spec(), twin, chat_spec("same question"), chat_spec()]
    )
    assert jobs[3].follows_id == jobs[2].pk
    job_cancel(job_id=jobs[4].pk)
    run_all({jobs[1].pk: Outcome.REJECTED})
    assert by_status() == {"succeeded": 3, "dead": 1, "cancelled": 1}
    old = [j.pk for j in jobs]
    # Day 20: two more, which succeed.
    clock.advance(days=20)
    young = [job_submit(owner=user, spec=chat_spec())[0].pk for _ in range(2)]
    run_all({})
    totals = totals_read()
    assert totals == {"succeeded": 5, "dead": 1, "cancelled": 1}
    assert JobAttempt.objects.count() == 5

    # Day 31: the day-0 jobs are past 30 days, but for the dead letter (90). One job per
    # transaction: the leader may go before its follower, which must not point at it then.
    clock.advance(days=11)
    assert jobs_purge(batch=1) == {"finished": 4, "dead": 0}
    left = set(Job.objects.values_list("pk", flat=True))
    assert left == {old[1], *young}
    assert set(JobAttempt.objects.values_list("job_id", flat=True)) == left
    assert totals_read() == totals
    stats = queue_stats()
    assert stats["depth"]["succeeded"] == 5 and stats["depth"]["dead"] == 1
    # every terminal status, those no job reached at 0
    assert stats["finished_total"] == {**dict.fromkeys(TERMINAL, 0), **totals}
    # The batch's page and results still work, with the job that is left. (Logged in again:
    # the session expired in the month the clock moved.)
    web.force_login(user)
    page = web.get(f"/batches/{batch.pk}/")
    assert page.status_code == 200
    results = web.get(f"/batches/{batch.pk}/results.jsonl")
    lines = [json.loads(line) for line in b"".join(results.streaming_content).splitlines()]
    assert [line["id"] for line in lines] == [f"batch_req_{old[1]}"]
    assert jobs_purge() == {"finished": 0, "dead": 0}  # nothing more today

    # Day 91: the dead letter's turn, and the day-20 jobs are past 30 days too.
    clock.advance(days=60)
    assert jobs_purge(batch=1) == {"finished": 2, "dead": 1}
    assert not Job.objects.exists() and not JobAttempt.objects.exists()
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert totals_read() == totals
    web.force_login(user)
    assert web.get(f"/batches/{batch.pk}/").status_code == 200


def test_zero_days_keeps_forever_and_a_retried_dead_letter_is_not_deleted(
    clock, user, echo_endpoint, settings
) -> None:
    settings.LLMQUEUE = {"RETENTION_DAYS": 0, "DEAD_RETENTION_DAYS": 1}
    job_submit(owner=user, spec=chat_spec())
    dead, _ = job_submit(owner=user, spec=chat_spec())
    run_all({dead.pk: Outcome.REJECTED})
    job_retry(job_id=dead.pk)  # back in the queue: no longer a dead letter
    clock.advance(days=400)
    assert jobs_purge() == {"finished": 0, "dead": 0}
    assert by_status() == {"succeeded": 1, "queued": 1}
    # Finished again: a second finish, counted again
    run_all({dead.pk: Outcome.REJECTED})
    assert totals_read() == {"succeeded": 1, "dead": 2}
    clock.advance(days=2)
    assert jobs_purge() == {"finished": 0, "dead": 1}


def test_deleted_jobs_are_archived_first(clock, user, echo_endpoint, settings, tmp_path) -> None:
    settings.LLMQUEUE = {"RETENTION_ARCHIVE_DIR": str(tmp_path)}
    jobs = [job_submit(owner=user, spec=chat_spec(custom_id=f"c{i}"))[0] for i in range(3)]
    run_all({})
    clock.advance(days=31)
    assert jobs_purge(batch=2)["finished"] == 3
    (path,) = tmp_path.iterdir()
    assert path.name == f"jobs-{clock.now:%Y-%m-%d}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [j.pk for j in jobs]
    assert rows[0]["result"] == ANSWER and rows[0]["custom_id"] == "c0"
    assert [a["outcome"] for a in rows[0]["attempt_log"]] == ["success"]


def test_totals_count_every_way_a_job_finishes(clock, user, echo_endpoint) -> None:
    job_submit(owner=user, spec=chat_spec("cached"))
    doomed, _ = job_submit(owner=user, spec=chat_spec())
    cancelled, _ = job_submit(owner=user, spec=chat_spec())
    job_cancel(job_id=cancelled.pk)
    run_all({doomed.pk: Outcome.REJECTED})
    hit, _ = job_submit(owner=user, spec=chat_spec("cached"))  # a cache hit at submission
    assert hit.status == Status.SUCCEEDED and hit.cache_hit
    assert totals_read() == by_status() == {"succeeded": 2, "dead": 1, "cancelled": 1}
    # A status's rows spread over shards; their sum is the total.
    assert sum(JobTotal.objects.values_list("n", flat=True)) == 4


def test_the_migration_seeds_the_totals_from_the_jobs(user, echo_endpoint) -> None:
    for _ in range(3):
        job_submit(owner=user, spec=chat_spec())
    run_all({})
    job_submit(owner=user, spec=chat_spec())  # queued: not counted
    JobTotal.objects.all().delete()
    migration: Any = importlib.import_module("llmqueue.migrations.0009_retention_totals")
    from django.apps import apps

    migration._seed(apps, types.SimpleNamespace(connection=connection))
    assert totals_read() == {"succeeded": 3}


def test_a_follower_outlives_its_deleted_leader(clock, user, echo_endpoint) -> None:
    _, (leader, follower) = jobs_submit_many(owner=user, specs=[chat_spec("q"), chat_spec("q")])
    assert follower.follows_id == leader.pk
    run_all({})
    # The follower finished with its leader; say it finished a month later (it cannot, but
    # a leader deleted in one batch and its follower in the next is the same case).
    Job.objects.filter(pk=follower.pk).update(finished_at=clock.now + dt.timedelta(days=30))
    clock.advance(days=31)
    assert jobs_purge() == {"finished": 1, "dead": 0}
    assert list(Job.objects.values_list("pk", "follows_id")) == [(follower.pk, None)]
    connection.check_constraints()  # no row points at a deleted job
