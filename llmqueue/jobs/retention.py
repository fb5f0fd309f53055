"""Retention: finished jobs and their attempts are deleted once old, a short batch at a time.

The housekeeping schedule (every minute) calls ``jobs_purge``: jobs that finished more than
``RETENTION_DAYS`` ago (succeeded, cancelled: every terminal status but dead) and dead
letters older than ``DEAD_RETENTION_DAYS`` go, ``RETENTION_BATCH`` jobs per transaction for
at most ``RETENTION_RUN_S`` a run, so that a backlog of millions is worked off over runs and
no transaction holds a lock for long (on SQLite each batch takes the writers' turn, as a
drain's step does: the drains go in between). 0 days keeps them forever.

What the deletion must not break, and how it does not:

- Counts. The stats read the lifetime totals (``llmqueue.jobs.totals``), which deleting
  jobs does not change.
- Attempts. Deleted first, by job (Django's CASCADE is emulated by the ORM, not declared in
  the database, and a raw DELETE skips it; the ORM's own ``delete()`` loads every job row,
  answers included, to collect them).
- Single-flight. A follower keeps ``follows`` after it took its leader's answer; the
  followers of deleted jobs get ``follows = NULL`` first, as SET_NULL would. A follower
  that still waits (it cannot, behind a finished leader, but if it did) then runs on its own.
- Batches. The Batch row stays: its pages count and list the jobs that are left, and its
  results hold those.
- Cache entries are not jobs: they expire and are evicted on their own (``llmqueue.cache``).

With ``RETENTION_ARCHIVE_DIR`` each batch is appended to that day's ``jobs-YYYY-MM-DD.jsonl``
(one job a line, its attempts inside) before it is deleted; a batch whose deletion then
fails is archived again by the next run (at least once).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from llmqueue.conf import conf
from llmqueue.db.locking import writer_turn
from llmqueue.db.rows import db_param, placeholders, rows_read
from llmqueue.models import TERMINAL, Job, JobAttempt, Status, status_literals

log = logging.getLogger(__name__)


def jobs_purge(
    *, now: dt.datetime | None = None, budget_s: float | None = None, batch: int | None = None
) -> dict[str, int]:
    """Delete the jobs past their retention, within ``budget_s`` (default
    ``RETENTION_RUN_S``); returns how many of each kind went: {"finished": n, "dead": n}."""
    now = now or timezone.now()
    size = int(batch or conf.RETENTION_BATCH)
    deadline = time.monotonic() + (conf.RETENTION_RUN_S if budget_s is None else budget_s)
    classes: list[tuple[str, list[Status], int]] = [
        ("finished", [s for s in TERMINAL if s != Status.DEAD], int(conf.RETENTION_DAYS)),
        ("dead", [Status.DEAD], int(conf.DEAD_RETENTION_DAYS)),
    ]
    deleted = {"finished": 0, "dead": 0}
    for name, statuses, days in classes:
        if days <= 0:
            continue
        cutoff = now - dt.timedelta(days=days)
        while True:  # one batch at least: every run makes progress
            n = _purge_batch(statuses, cutoff=cutoff, size=size, now=now)
            deleted[name] += n
            if n < size or time.monotonic() >= deadline:
                break
    if any(deleted.values()):
        log.info("retention deleted %(finished)d finished jobs and %(dead)d dead letters", deleted)
    return deleted


def _purge_batch(statuses: Sequence[Status], *, cutoff: dt.datetime, size: int, now: Any) -> int:
    """One short transaction: up to ``size`` jobs of ``statuses`` finished before ``cutoff``,
    with their attempts."""
    # The statuses are literals (with parameters SQLite reads every job): one status (dead)
    # is an equality, which SQLite reads from job_dead; several, a range on job_finished
    # from its oldest end.
    match = "= " if len(statuses) == 1 else "IN "
    where = f"status {match}({status_literals(statuses)}) AND finished_at < %s"
    params = [db_param(Job, "finished_at", cutoff)]
    sql = f"SELECT {{columns}} FROM {{table}} WHERE {where} LIMIT {int(size)}"
    if connection.features.has_select_for_update_skip_locked:
        # An operator's retry of a dead letter waits for us, or we skip the row it holds.
        sql += " FOR UPDATE SKIP LOCKED"
    with writer_turn(), transaction.atomic():
        ids = [pk for (pk,) in rows_read(Job, ("id",), sql, params)]
        if not ids:
            return 0
        if conf.RETENTION_ARCHIVE_DIR:
            _archive(ids, now=now)
        job = connection.ops.quote_name(Job._meta.db_table)
        attempt = connection.ops.quote_name(JobAttempt._meta.db_table)
        marks = placeholders(ids)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {attempt} WHERE job_id IN ({marks})", ids)
            cursor.execute(f"UPDATE {job} SET follows_id = NULL WHERE follows_id IN ({marks})", ids)
            cursor.execute(f"DELETE FROM {job} WHERE id IN ({marks}) AND {where}", [*ids, *params])
            return int(cursor.rowcount)


_ARCHIVED = (
    "id",
    "owner_id",
    "batch_id",
    "custom_id",
    "kind",
    "model",
    "payload",
    "priority",
    "status",
    "attempts",
    "result",
    "error",
    "tokens_used",
    "cache_hit",
    "idempotency_key",
    "created_at",
    "started_at",
    "finished_at",
)


def _archive(ids: list[int], *, now: dt.datetime) -> None:
    """Append these jobs, with their attempts, to the archive's file of the day."""
    attempts: dict[int, list[dict[str, Any]]] = {}
    for a in JobAttempt.objects.filter(job_id__in=ids).order_by("job_id", "number").values():
        row: dict[str, Any] = dict(a)
        attempts.setdefault(row.pop("job_id"), []).append(row)
    path = os.path.join(conf.RETENTION_ARCHIVE_DIR, f"jobs-{now:%Y-%m-%d}.jsonl")
    with open(path, "a", encoding="utf-8") as out:
        for row in Job.objects.filter(pk__in=ids).order_by("id").values(*_ARCHIVED):
            row["attempt_log"] = attempts.get(row["id"], [])
            out.write(json.dumps(row, cls=DjangoJSONEncoder, ensure_ascii=False) + "\n")
