"""Deadlines: a queued job still waiting at its ``deadline`` expires without an upstream call.

Two guards keep that promise. The scheduler never plans a job whose deadline has passed
(``llmqueue.worker.scheduler``: its candidates' SQL checks it), so none is called late however
long the sweep takes; and ``jobs_expire`` moves such jobs to ``expired`` through the transition
table, in batches, reading them off the partial index ``job_deadline`` (queued jobs with a
deadline only), so a sweep over a queue without deadlines costs one empty index probe. The
drains sweep at each heartbeat, the housekeeping schedule every minute.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from llmqueue import metrics
from llmqueue.db.rows import db_param, rows_read
from llmqueue.jobs.singleflight import followers_release
from llmqueue.jobs.transitions import ALLOWED, jobs_transition, wake_on_commit
from llmqueue.models import Job, Status, status_literals

#: the error text of an expired job
EXPIRED_ERROR = "expired: its deadline passed before it ran"
#: jobs one statement expires; a sweep runs at most ``rounds`` of them
SWEEP_BATCH = 1000

# The status is a literal: SQLite matches the partial index job_deadline only then.
_DUE_SQL = (
    f"SELECT {{columns}} FROM {{table}} WHERE status = {status_literals(ALLOWED['expire'])} "
    f"AND deadline IS NOT NULL AND deadline <= %s ORDER BY deadline LIMIT %s"
)


def jobs_expire(*, now: dt.datetime | None = None, rounds: int = 10) -> int:
    """queued -> expired for the jobs whose deadline has passed, ``SWEEP_BATCH`` at a time (each
    its own short transaction: a long sweep never holds SQLite's write lock for long). Their
    single-flight followers are released to run on their own (their own deadline, if any,
    then decides for them). Returns how many expired."""
    when = now or timezone.now()
    total = 0
    for _ in range(rounds):
        due = [db_param(Job, "deadline", when), SWEEP_BATCH]
        ids = [pk for (pk,) in rows_read(Job, ("id",), _DUE_SQL, due)]
        if not ids:
            break
        with transaction.atomic():
            n = jobs_transition(
                "expire",
                where=Q(pk__in=ids, deadline__lte=when),
                error=EXPIRED_ERROR,
                finished_at=when,
            )
            if followers_release(ids, now=when):
                wake_on_commit()
            metrics.jobs_finished(Status.EXPIRED, n)
        total += n
        if len(ids) < SWEEP_BATCH:
            break
    return total
