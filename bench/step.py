"""The database's share of a job: the drain's step alone, without HTTP, a cluster or a loop.

    .venv/bin/python bench/step.py [--jobs 5000] [--batch 32] [--database-url postgres://...]
        [--no-cache] [--profile]

Queues ``--jobs`` chat jobs (one bulk submission, like ``POST /api/jobs/bulk/``), then runs the
drain's step (``llmqueue.worker.drain.Drainer``'s: record outcomes, let endpoints and buckets learn,
claim more) in a loop, ``--batch`` successes recorded and ``--batch`` jobs claimed per step,
until every job has succeeded. Prints the CPU of this thread per job, in total and by part
(``time.thread_time``: SQLite works in this thread; PostgreSQL's server CPU is not counted and
is shown apart as wall time). With ``--profile``, the top of a cProfile of the steps.

What it answers: how much of bench/throughput.py's worker CPU per job is the database's, and
which statement of the step to look at first.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure(args: argparse.Namespace, tmp: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'step.sqlite3'}"
    os.environ.pop("REDIS_URL", None)
    if args.no_cache:
        os.environ["LLMQUEUE_CACHE_ENABLED"] = "0"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def answer(i: int) -> dict[str, Any]:
    """What the stand-in answers: a small chat completion."""
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "model": "echo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello {i}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from llmqueue.calls.types import CallOutcome, CallResult
    from llmqueue.db.locking import writer_turn
    from llmqueue.endpoints.pools import endpoints_learn
    from llmqueue.jobs import AttemptResult, JobSpec, attempt_usages, jobs_record, jobs_submit_many
    from llmqueue.limits.ledger import buckets_reconcile
    from llmqueue.models import Endpoint, Job, Outcome, Status
    from llmqueue.worker.scheduler import jobs_claim

    Endpoint.objects.create(
        name=f"step-{uuid.uuid4().hex[:6]}",
        base_url="http://127.0.0.1:9/v1",
        served_models=["echo"],
        max_concurrency=100_000,
    )
    user = get_user_model().objects.create_user(username=f"step-{uuid.uuid4().hex[:8]}")
    specs = [
        JobSpec(
            kind="chat",
            payload={"model": "echo", "messages": [{"role": "user", "content": f"hello {i}"}]},
        )
        for i in range(args.jobs)
    ]
    jobs_submit_many(owner=user, specs=specs)

    parts: dict[str, float] = defaultdict(float)
    walls: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        c, w = time.thread_time(), time.perf_counter()
        out = fn(*a, **kw)
        parts[name] += time.thread_time() - c
        walls[name] += time.perf_counter() - w
        return out

    def step(results: list[Any], want: int) -> list[Any]:
        with writer_turn(), transaction.atomic():
            timed("record", jobs_record, results)
            timed("learn", endpoints_learn, [r.call for r in results])
            timed("learn", buckets_reconcile, attempt_usages(results))
            claims = timed("claim", jobs_claim, limit=want)
            c = time.thread_time()
        parts["commit"] += time.thread_time() - c
        return claims

    profile = cProfile.Profile() if args.profile else None
    done = steps = 0
    claims = step([], args.batch)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    if profile:
        profile.enable()
    while claims:
        now = timezone.now()
        results = [
            AttemptResult(
                claim=c,
                call=CallResult(
                    target=c.target,
                    started_at=now - dt.timedelta(milliseconds=100),
                    duration_ms=100.0,
                    outcome=Outcome.SUCCESS,
                    http_status=200,
                    body=answer(c.job_id),
                    health=CallOutcome.SUCCESS,
                ),
            )
            for c in claims
        ]
        claims = step(results, args.batch)
        done += len(results)
        steps += 1
    if profile:
        profile.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - t0
    left = Job.objects.filter(owner=user).exclude(status=Status.SUCCEEDED).count()
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    return {
        "jobs": done,
        "not_succeeded": left,
        "steps": steps,
        "cpu_ms_per_job": round(cpu * 1000 / done, 3),
        "wall_ms_per_job": round(wall * 1000 / done, 3),
        "cpu_ms_per_job_by_part": {k: round(v * 1000 / done, 3) for k, v in parts.items()},
        "wall_ms_per_job_by_part": {k: round(v * 1000 / done, 3) for k, v in walls.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32, help="results and claims per step")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--no-cache", action="store_true", help="LLMQUEUE_CACHE_ENABLED=0")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmqueue-step-") as tmp:
        configure(args, Path(tmp))
        r = run(args)
    for key, value in r.items():
        print(f"{key:<24} {value}")


if __name__ == "__main__":
    main()
