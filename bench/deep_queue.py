"""What the hot operations cost with a deep queue: does anything walk it?

    .venv/bin/python bench/deep_queue.py [--queued 300000] [--finished 100000]
        [--database-url postgres://...] [--postgres]

Fills a fresh database (SQLite by default, in a temp directory; ``--postgres``: a database
``llmqueue_deep_<pid>`` on 127.0.0.1:5432, created and dropped here) with ``--queued`` queued
cacheable chat jobs and ``--finished`` finished ones (97% succeeded, 2% cancelled, 1% dead,
finished over the last 60 days, one attempt each), of 10 users and 2 models, written
directly (``llmqueue.db.rows`` and INSERT ... SELECT; on PostgreSQL then analyzed, as
autovacuum would have), then times each operation below three times and prints the median
wall time, in ms: a submission of one job and of 1,000 (both hold the write lock on SQLite,
which the drains wait for), a drain's claim of 32 and the recording of their outcomes, the
drains' idle poll (the next due job), the reaper, a /metrics scrape's database state (every
state collector), the stats API's ``queue_stats`` and the dashboard's data (what its poll
every 3 s reads, as an operator sees it).
``tests/jobs/test_queue_scale.py`` checks the same operations for growth with the queue; this
prints how much they cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 20_000


def postgres_database() -> tuple[str, Callable[[], None]]:
    """A database of this run's own on the local PostgreSQL, and how to drop it."""
    import psycopg

    name = f"llmqueue_deep_{os.getpid()}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return f"postgres://postgres@127.0.0.1:5432/{name}", drop


def configure(database_url: str | None, tmp: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{tmp / 'deep.sqlite3'}"
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def fill(queued: int, finished: int) -> list[Any]:
    """The jobs, as submissions would have left them (without running each through one)."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from llmqueue.db.rows import InstancesInsert
    from llmqueue.models import Endpoint, Job

    users = [get_user_model().objects.create(username=f"deep-{i}") for i in range(10)]
    Endpoint.objects.create(
        name="deep", base_url="http://127.0.0.1:9/v1", served_models=["m0", "m1"]
    )
    now = timezone.now()
    total = queued + finished
    history = dt.timedelta(days=60)
    for start in range(0, total, CHUNK):
        jobs = []
        for i in range(start, min(total, start + CHUNK)):
            owner = users[i % len(users)]
            done = i >= queued
            status = "queued"
            if done:
                share = i % 100
                status = "dead" if share == 0 else "cancelled" if share <= 2 else "succeeded"
            # spread over the last 60 days, the newest last (ids grow with time)
            at = now - history * (1 - (i - queued + 1) / max(1, finished)) if done else now
            payload = {"model": f"m{i % 2}", "messages": [{"role": "user", "content": str(i)}]}
            jobs.append(
                Job(
                    owner_id=owner.pk,
                    kind="chat",
                    model=payload["model"],
                    payload=payload,
                    priority=i % 10,
                    created_at=at,
                    available_at=at,
                    tokens_estimate=10,
                    cache_key=f"user:{owner.pk}/{hashlib.sha256(str(i).encode()).hexdigest()}",
                    fair_seq=i,
                    status=status,
                    started_at=at if done else None,
                    finished_at=at if done else None,
                    error="gave up after 5 attempts; last error: HTTP 503"
                    if status == "dead"
                    else "",
                    result={"choices": [{"text": "ok"}]} if status == "succeeded" else None,
                )
            )
        with transaction.atomic():
            InstancesInsert(jobs).run(jobs)
    with transaction.atomic(), connection.cursor() as cursor:
        # One attempt per finished job, in one statement.
        cursor.execute(
            "INSERT INTO llmqueue_jobattempt (job_id, number, endpoint_name, started_at, "
            "duration_ms, http_status, outcome, error) SELECT id, 1, 'deep', finished_at, "
            "100.0, 200, 'success', '' FROM llmqueue_job WHERE finished_at IS NOT NULL"
        )
        if "llmqueue_jobtotal" in connection.introspection.table_names(cursor):
            # The lifetime totals, as the finishing transitions would have kept them.
            cursor.execute(
                "INSERT INTO llmqueue_jobtotal (status, shard, n) SELECT status, 0, COUNT(*) "
                "FROM llmqueue_job WHERE finished_at IS NOT NULL GROUP BY status"
            )
    if connection.vendor == "postgresql":
        # A queue that grew over time has been vacuumed and analyzed by autovacuum; one
        # written in a minute has not: PostgreSQL's planner would guess blind, and its
        # index-only scans would visit every row (no visibility map yet). (SQLite never
        # gathers statistics on its own: no ANALYZE there, as in a deployment.)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return users


def operations(user: Any) -> dict[str, Callable[[], Any]]:
    from django.db import transaction
    from django.test import RequestFactory
    from django.utils import timezone

    from llmqueue import metrics
    from llmqueue.calls.types import CallResult
    from llmqueue.jobs import (
        AttemptResult,
        JobSpec,
        job_submit,
        jobs_reap,
        jobs_record,
        jobs_submit_many,
        queue_next_due,
        selectors,
    )
    from llmqueue.models import Outcome
    from llmqueue.web.views import dashboard_data_of
    from llmqueue.worker.scheduler import jobs_claim

    staff = RequestFactory().get("/dashboard/data/")
    staff.user = type(user).objects.create(username="deep-staff", is_staff=True)

    def spec() -> JobSpec:
        text = f"new {time.monotonic_ns()}"
        return JobSpec(
            kind="chat", payload={"model": "m1", "messages": [{"role": "user", "content": text}]}
        )

    def claim_and_record() -> None:
        with transaction.atomic():
            claims = jobs_claim(limit=32)
        body = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
        now = timezone.now()
        with transaction.atomic():
            jobs_record(
                [
                    AttemptResult(
                        claim=c,
                        call=CallResult(
                            target=c.target,
                            started_at=now,
                            duration_ms=1.0,
                            outcome=Outcome.SUCCESS,
                            http_status=200,
                            body=body,
                        ),
                    )
                    for c in claims
                ]
            )

    return {
        "submit 1 job": lambda: job_submit(owner=user, spec=spec()),
        "submit 1,000 jobs (bulk)": lambda: jobs_submit_many(
            owner=user, specs=[spec() for _ in range(1000)]
        ),
        "claim 32, record them": claim_and_record,
        "next due (idle poll)": queue_next_due,
        "reap": jobs_reap,
        "scrape's state (all)": lambda: list(metrics.STATE_REGISTRY.collect()),
        "queue_stats (stats API)": selectors.queue_stats,
        "dashboard data (staff)": lambda: dashboard_data_of(staff),
        **retention_operations(),
    }


def retention_operations() -> dict[str, Callable[[], Any]]:
    """Where the code has retention (not main before it): a batch of 1,000 old jobs deleted
    as the retention pass deletes them (attempts first, by id) and by the ORM's cascade
    (which loads the jobs to collect them), and a pass of one second (how many it deletes)."""
    try:
        from llmqueue.jobs.retention import jobs_purge
    except ImportError:
        return {}
    from django.db import transaction
    from django.utils import timezone

    from llmqueue.db.locking import writer_turn
    from llmqueue.models import Job

    def orm_cascade() -> None:
        cutoff = timezone.now() - dt.timedelta(days=30)
        old = Job.objects.filter(status="succeeded", finished_at__lt=cutoff).order_by()
        ids = list(old.values_list("pk", flat=True)[:1000])
        with writer_turn(), transaction.atomic():
            Job.objects.filter(pk__in=ids).delete()

    return {
        "delete 1,000: retention": lambda: jobs_purge(batch=1000, budget_s=1e-9),
        "delete 1,000: ORM cascade": orm_cascade,
        "retention pass of 1 s": lambda: jobs_purge(budget_s=1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=300_000)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--database-url", help="a database used by nothing else (it is filled)")
    parser.add_argument(
        "--postgres", action="store_true", help="a database of its own on 127.0.0.1:5432"
    )
    args = parser.parse_args()
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.postgres:
        args.database_url, drop = postgres_database()
    try:
        run(args)
    finally:
        drop()


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmqueue-deep-") as tmp:
        configure(args.database_url, Path(tmp))
        t = time.perf_counter()
        users = fill(args.queued, args.finished)
        print(
            f"filled: {args.queued:,} queued, {args.finished:,} finished jobs "
            f"in {time.perf_counter() - t:.1f} s"
        )
        for name, run in operations(users[3]).items():
            times = []
            for _ in range(3):
                t = time.perf_counter()
                out = run()
                times.append((time.perf_counter() - t) * 1000)
            said = f"  {out}" if isinstance(out, dict) and "dead" in out else ""
            print(f"{name:<26} {statistics.median(times):8.1f} ms{said}")


if __name__ == "__main__":
    main()
