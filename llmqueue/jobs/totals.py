"""What the stats read instead of the history: lifetime totals kept as rows, and the counts
of the live statuses from their partial indexes.

Counting the Job table's history cost ~0.5 s at 400,000 jobs, on every poll of every
dashboard; and retention (``llmqueue.jobs.retention``) deletes the history. So every
transition that finishes jobs adds them to ``JobTotal`` in its own transaction
(``totals_add``: the transition executor, ``llmqueue.jobs.transitions``, and the intake for
cache hits, which are inserted finished), and the reads sum a few rows, whatever the
history holds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from django.db import connection

from llmqueue.db.rows import rows_read
from llmqueue.models import Job, JobTotal, Status, status_literals

#: rows per status that writers spread over (``JobTotal.shard``)
SHARDS = 8


def totals_add(counts: Mapping[str, int]) -> None:
    """Add finished jobs to the lifetime totals: ``counts[status]`` jobs each. Call inside
    the transaction of the transition that finished them, so that they count once and only
    if it commits. One upsert per status, in a fixed order (two writers never wait for each
    other's rows crosswise)."""
    rows = sorted((str(s), n) for s, n in counts.items() if n)
    if not rows:
        return
    shard = random.randrange(SHARDS)  # spreads lock waits; nothing secret
    table = connection.ops.quote_name(JobTotal._meta.db_table)
    sql = (
        f"INSERT INTO {table} (status, shard, n) VALUES (%s, %s, %s) "
        f"ON CONFLICT (status, shard) DO UPDATE SET n = {table}.n + excluded.n"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(s, shard, n) for s, n in rows])


def totals_read() -> dict[str, int]:
    """Jobs finished since the start, by terminal status (deleted ones included)."""
    sums: dict[str, int] = {}
    for status, n in JobTotal.objects.values_list("status", "n"):
        sums[status] = sums.get(status, 0) + n
    return sums


#: the partial index that holds the jobs of each live status, and only them
_LIVE_INDEX = {
    Status.QUEUED: "job_next_due",
    Status.RUNNING: "job_running",
    Status.DEAD: "job_dead",
}


def status_count(status: Status) -> int:
    """How many jobs are in ``status`` now, for a live status (queued, running, dead), from
    its partial index. SQLite is told which: left to itself, it counted the queued jobs
    from job_owner_status, an index of every job (~40 ms at 400,000), and with the status
    as a parameter it uses no partial index at all."""
    hint = f"INDEXED BY {_LIVE_INDEX[status]} " if connection.vendor == "sqlite" else ""
    sql = f"SELECT COUNT(*) FROM {{table}} {hint}WHERE status = {status_literals([status])}"
    ((n,),) = rows_read(Job, (), sql)
    return int(n)
