"""The response cache: what a cache hit costs the server, and what repeats save end to end.

    .venv/bin/python bench/cache.py [--jobs 10000] [--repeat 0.5] [--latency-ms 100]
        [--inflight 64] [--workers 1] [--hit-samples 2000] [--rounds 2] [--timeout 600]
        [--database-url postgres://...] [--redis redis://...]

One run, from the repository root's code, on a fresh SQLite file (or ``--database-url``, a
database used by nothing else), with the stand-in endpoint (``llmqueue.standin``) at
``--latency-ms`` and a real ``manage.py qcluster`` (``--workers`` drains of ``--inflight``
calls each):

1. Hit latency, server side: one request is answered and cached, then ``--hit-samples``
   ``POST /api/jobs/`` of it go through Django's test client in this process (the real view,
   serializer, ``job_submit`` and cache; no network). Each is timed around ``client.post``.
   Twice: with this process's L1 holding the answer, and with L1 emptied before each request
   (the answer then comes from Redis with ``--redis``, else from the database).
2. The workload: ``--jobs`` chat jobs of which a share ``--repeat`` repeat an earlier request
   of the same run (``--jobs x (1 - repeat)`` distinct requests, the repeats drawn from them
   at random, all shuffled), submitted through ``POST /api/jobs/bulk/``, 1000 per request.
   ``--rounds`` times each with ``"cache": false`` on every job and with the cache on, in the
   order off, on, on, off, ... (new prompts each run, so that nothing is cached from
   before). elapsed = last ``finished_at`` - the moment before the first submission; upstream
   calls are counted from the stand-in's log; speedup = total elapsed off / total on.

Prints a table and one ``RESULT {json}`` line. Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import (  # noqa: E402
    CpuTree,
    _post,
    configure,
    make_endpoint_and_user,
    settle_s,
    start_cluster,
    stop_cluster,
    wait_idle,
)
from bench.upstream_clients import standin  # noqa: E402

BULK_CHUNK = 1000


def standin_calls(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/log", timeout=10) as r:
        return len(json.loads(r.read())["calls"])


def standin_reset(base_url: str) -> None:
    req = urllib.request.Request(base_url.removesuffix("/v1") + "/reset", data=b"{}")
    urllib.request.urlopen(req, timeout=10).close()


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples_ms), 3),
        "p99_ms": round(cuts[98], 3),
        "n": len(samples_ms),
    }


# --- 1. hit latency -------------------------------------------------------------------------------


def hit_latency(client: Any, samples: int) -> dict[str, dict[str, float]]:
    from llmqueue.cache import local_clear
    from llmqueue.models import Job

    payload = {"model": "echo", "messages": [{"role": "user", "content": f"hit {uuid.uuid4()}"}]}
    body = {"payload": payload}
    job_id = _post(client, "/api/jobs/", body)["id"]
    deadline = time.monotonic() + 60
    while not Job.objects.get(pk=job_id).is_terminal:
        if time.monotonic() > deadline:
            raise TimeoutError("the job to cache did not finish within 60 s")
        time.sleep(0.05)
    results: dict[str, dict[str, float]] = {}
    for level in ("l1", "below_l1"):
        times = []
        for _ in range(samples):
            if level == "below_l1":
                local_clear()  # as a web process that never saw this answer
            start = time.perf_counter()
            answer = _post(client, "/api/jobs/", body)
            times.append((time.perf_counter() - start) * 1000)
            if not answer["cache_hit"]:
                raise RuntimeError(f"expected a cache hit, got {answer['status']}")
        results[level] = _percentiles(times)
    return results


# --- 2. the workload ------------------------------------------------------------------------------


def workload(jobs: int, repeat: float, *, tag: str, seed: int) -> list[dict[str, Any]]:
    """``jobs`` requests, a share ``repeat`` of them repeating an earlier one."""
    rng = random.Random(seed)
    distinct = max(1, round(jobs * (1 - repeat)))
    base = [
        {"model": "echo", "messages": [{"role": "user", "content": f"q {i} {tag}"}]}
        for i in range(distinct)
    ]
    requests = base + [rng.choice(base) for _ in range(jobs - distinct)]
    rng.shuffle(requests)
    return requests


def run_workload(
    client: Any,
    user: Any,
    base_url: str,
    requests: list[dict[str, Any]],
    *,
    cache: bool,
    timeout: float,
) -> dict[str, Any]:
    from django.db.models import Count, Max, Q
    from django.utils import timezone

    from llmqueue.models import Job, Status

    if not wait_idle(timeout=settle_s()):
        print("warning: the cluster did not settle before the run", file=sys.stderr)
    standin_reset(base_url)
    before = Job.objects.filter(owner=user).aggregate(m=Max("id"))["m"] or 0
    t0 = timezone.now()
    for start in range(0, len(requests), BULK_CHUNK):
        chunk = [{"payload": p, "cache": cache} for p in requests[start : start + BULK_CHUNK]]
        _post(client, "/api/jobs/bulk/", {"jobs": chunk})
    submitted_s = (timezone.now() - t0).total_seconds()
    mine = Job.objects.filter(owner=user, id__gt=before)
    deadline = time.monotonic() + timeout
    while mine.exclude(status__in=[Status.SUCCEEDED, Status.DEAD, Status.CANCELLED]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run did not finish within {timeout:g} s")
        time.sleep(0.1)
    agg = mine.aggregate(
        t1=Max("finished_at"),
        succeeded=Count("id", filter=Q(status=Status.SUCCEEDED)),
        hits=Count("id", filter=Q(cache_hit=True, follows__isnull=True)),
        followers=Count("id", filter=Q(follows__isnull=False, cache_hit=True)),
    )
    elapsed = (agg["t1"] - t0).total_seconds()
    calls = standin_calls(base_url)
    return {
        "cache": cache,
        "jobs": len(requests),
        "succeeded": agg["succeeded"],
        "upstream_calls": calls,
        "hits_at_submission": agg["hits"],
        "followers": agg["followers"],
        "submit_s": round(submitted_s, 3),
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(len(requests) / elapsed, 1),
        "calls_per_s": round(calls / elapsed, 1),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    configure(args, tmp)
    from django.test import Client

    with standin(latency_ms=args.latency_ms) as base_url:
        user = make_endpoint_and_user(base_url)
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        cluster = start_cluster(tmp / "qcluster.log")
        tree = CpuTree(cluster.pid)  # its processes, to stop every one of them at the end
        tree.start()
        try:
            hits = hit_latency(client, args.hit_samples)
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for n in range(args.rounds):
                # ABBA: off, on, then on, off... so that a drift in the machine's load (it is
                # shared) weighs on both alike.
                for cache in (False, True) if n % 2 == 0 else (True, False):
                    requests = workload(args.jobs, args.repeat, tag=uuid.uuid4().hex, seed=n)
                    runs[cache].append(
                        run_workload(
                            client, user, base_url, requests, cache=cache, timeout=args.timeout
                        )
                    )
        finally:
            tree.sample()
            stop_cluster(cluster, tree)
    return {
        "database": "sqlite" if not args.database_url else args.database_url.split(":", 1)[0],
        "broker_and_cache": "redis" if args.redis else "orm+locmem",
        "latency_ms": args.latency_ms,
        "inflight": args.inflight * args.workers,
        "repeat": args.repeat,
        "hit_latency": hits,
        "cache_off": runs[False],
        "cache_on": runs[True],
        "speedup": round(
            sum(r["elapsed_s"] for r in runs[False]) / sum(r["elapsed_s"] for r in runs[True]), 2
        ),
    }


def print_summary(r: dict[str, Any]) -> None:
    h = r["hit_latency"]
    print(f"database            {r['database']} ({r['broker_and_cache']})")
    print(f"stand-in latency    {r['latency_ms']:g} ms, {r['inflight']} calls in flight")
    print(
        f"hit, L1             p50 {h['l1']['p50_ms']:.2f} ms, p99 {h['l1']['p99_ms']:.2f} ms "
        f"(n={h['l1']['n']}, server side, POST /api/jobs/)"
    )
    print(
        f"hit, below L1       p50 {h['below_l1']['p50_ms']:.2f} ms, "
        f"p99 {h['below_l1']['p99_ms']:.2f} ms"
    )
    for name in ("cache_off", "cache_on"):
        for w in r[name]:
            print(
                f"{name:<19} {w['jobs']} jobs ({w['succeeded']} succeeded) in "
                f"{w['elapsed_s']:.2f} s = {w['jobs_per_s']:.0f} jobs/s; "
                f"{w['upstream_calls']} upstream calls ({w['calls_per_s']:.0f}/s), "
                f"{w['hits_at_submission']} hits at submission, {w['followers']} followers"
            )
    print(
        f"speedup             {r['speedup']:.2f}x (total elapsed off / on; "
        f"{r['repeat']:.0%} of the requests repeat)"
    )
    print("RESULT " + json.dumps(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--repeat", type=float, default=0.5, help="share of repeated requests")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="stand-in latency")
    parser.add_argument("--inflight", type=int, default=64, help="calls in flight per drain")
    parser.add_argument("--workers", type=int, default=1, help="drains (worker processes)")
    parser.add_argument("--hit-samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, off and on")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--redis", default="", metavar="REDIS_URL", help="Redis broker + cache")
    args = parser.parse_args()
    if not 0 <= args.repeat < 1:
        parser.error("--repeat must be in [0, 1)")
    tmp = Path(tempfile.mkdtemp(prefix="llmqueue-bench-cache-"))
    try:
        print_summary(run(args, tmp))
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
