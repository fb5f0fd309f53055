"""The balancer strategies end to end: how much traffic a slow endpoint gets, and what it costs.

    .venv/bin/python bench/balancer.py [--mode backlog|arrival|both] [--jobs 3000]
        [--arrival-rate 300] [--duration 20] [--latency-ms 100] [--slow-factor 10]
        [--strategies round_robin,weighted_round_robin,least_in_flight,latency]
        [--max-concurrency 1000] [--inflight 64] [--timeout 300]

Three stand-in endpoints (``llmqueue.standin``) serve the model "echo", all of weight 1: two
answer after ``--latency-ms``, the third ``--slow-factor`` times slower. For each strategy,
in turn, on one temporary SQLite database:

1. every job, attempt, cache entry, token bucket, drain slot and queued django-q2 task is
   deleted, the endpoints' learned state (latency average, failure share, breaker, pause) is
   reset and the stand-ins' call logs are cleared, so no run inherits anything from the last;
2. ``manage.py qcluster`` starts in its own process group with one drain of ``--inflight``
   calls (``LLMQUEUE_DRAINS_PER_HOST=1``, ``LLMQUEUE_DRAIN_CONCURRENCY``) and
   ``LLMQUEUE_BALANCER=<strategy>``;
3. chat jobs are submitted through ``POST /api/jobs/bulk/`` (Django's test client, in this
   process: the real view and service):

   backlog   ``--jobs`` at once, 1000 per request: the queue is long from the start, so
             created -> finished mostly measures the wait in the queue, and makespan and
             jobs/s are the strategy's throughput;
   arrival   ``--arrival-rate`` jobs/s for ``--duration`` s, a small burst every 100 ms: a
             queue that keeps up stays short, and created -> finished is what a client sees;

4. once every job is terminal, the cluster gets SIGINT (SIGKILL after 15 s) and the run is
   read from the rows it left: created -> finished p50/p99 per job, upstream call time
   p50/p99 (``JobAttempt.duration_ms``), makespan (last ``finished_at`` - the moment before
   the first submission), jobs/s, and each endpoint's share of the calls
   (``JobAttempt.endpoint_name``) with its mean calls in flight (busy time / makespan).

Prints a table per mode and one ``RESULT {json}`` line per strategy. Everything started is
stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.upstream_clients import standin  # noqa: E402

STRATEGIES = ("round_robin", "weighted_round_robin", "least_in_flight", "latency")
MODEL = "echo"
SLOW = "slow"
BULK_CHUNK = 1000  # the API's MAX_BULK_JOBS
BURST_S = 0.1  # arrival mode: one bulk request this often
POLL_S = 0.25  # slow enough not to crowd the drain's transactions on SQLite
STOP_S = 15.0


@dataclass(frozen=True)
class Upstream:
    """A stand-in endpoint as the benchmark knows it."""

    name: str
    base_url: str
    latency_ms: float


# --- setup ----------------------------------------------------------------------------------------


def configure(args: argparse.Namespace, tmp: Path) -> None:
    """Environment for this process and every cluster, then Django, then migrate."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ.pop("REDIS_URL", None)
    os.environ["LLMQUEUE_DRAINS_PER_HOST"] = "1"
    os.environ["LLMQUEUE_DRAIN_CONCURRENCY"] = str(args.inflight)
    import django
    from django.core.management import call_command

    django.setup()
    # whitenoise warns once per request handler that STATIC_ROOT was never collected.
    warnings.filterwarnings("ignore", message="No directory at")
    call_command("migrate", verbosity=0)


@contextlib.contextmanager
def upstreams(args: argparse.Namespace) -> Iterator[list[Upstream]]:
    """The three stand-ins, each in its own process, and an Endpoint row for each."""
    from llmqueue.models import Endpoint

    latencies = {
        "fast-1": args.latency_ms,
        "fast-2": args.latency_ms,
        SLOW: args.latency_ms * args.slow_factor,
    }
    with contextlib.ExitStack() as stack:
        started = [
            Upstream(name, stack.enter_context(standin(latency_ms=ms)), ms)
            for name, ms in latencies.items()
        ]
        for u in started:
            Endpoint.objects.update_or_create(
                name=u.name,
                defaults={
                    "base_url": u.base_url,
                    "served_models": [MODEL],
                    "weight": 1,
                    "max_concurrency": args.max_concurrency,
                },
            )
        yield started


def _standin(u: Upstream, path: str, *, post: bool = False) -> Any:
    root = u.base_url.removesuffix("/v1")
    request = urllib.request.Request(f"{root}{path}", data=b"{}" if post else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def reset_state(ups: list[Upstream]) -> None:
    """Forget everything a previous run left: jobs, caches, slots, tasks, what was learned."""
    from django_q.models import OrmQ

    from llmqueue.models import CacheEntry, DrainSlot, Endpoint, Job, TokenBucket

    Job.objects.all().delete()  # attempts go with them (on_delete=CASCADE)
    CacheEntry.objects.all().delete()
    TokenBucket.objects.all().delete()  # none unless limits are set; they refill from full
    DrainSlot.objects.all().delete()
    OrmQ.objects.all().delete()  # a drain task queued by the last cluster, never run
    Endpoint.objects.update(
        healthy=True,
        health_failures=0,
        health_successes=0,
        latency_ms=None,
        latency_at=None,
        recent_failures=0.0,
        recent_calls=0.0,
        recent_at=0.0,
        breaker={},
        breaker_version=0,
        breaker_state="closed",
        paused_until=0.0,
    )
    for u in ups:
        _standin(u, "/reset", post=True)


# --- the cluster ----------------------------------------------------------------------------------


def start_cluster(
    strategy: str, log_path: Path, *, ready_s: float = 30.0
) -> subprocess.Popen[bytes]:
    """``manage.py qcluster`` in its own session with ``strategy``; returns once it runs."""
    env = {
        **os.environ,
        "LLMQUEUE_BALANCER": strategy,
        "Q_CLUSTER_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        "Q_LOG_LEVEL": "INFO",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one signal reaches every worker
        )
    try:
        deadline = time.monotonic() + ready_s
        while b"running" not in log_path.read_bytes():
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"qcluster exited with code {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f'qcluster did not log "running" within {ready_s:g} s')
            time.sleep(0.1)
    except BaseException:
        stop_cluster(proc)
        raise
    return proc


def stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the group (the clean stop: drains finish, workers take their pills), SIGKILL
    to whatever of it is left after ``STOP_S``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_S)
    # Workers can outlive the guard; while one lives the group id cannot be reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# --- submission -----------------------------------------------------------------------------------


def _payload(tag: str, i: int) -> dict[str, Any]:
    # Distinct per run and job: no cache entry or in-flight twin can answer one for another.
    return {"model": MODEL, "messages": [{"role": "user", "content": f"{tag} {i}"}]}


def _post_bulk(client: Any, tag: str, numbers: range) -> None:
    body = {"jobs": [{"payload": _payload(tag, i)} for i in numbers]}
    response = client.post("/api/jobs/bulk/", body, content_type="application/json")
    if response.status_code != 201:
        raise RuntimeError(f"bulk submit: {response.status_code} {response.content[:500]!r}")


def submit_backlog(client: Any, tag: str, jobs: int) -> None:
    for start in range(0, jobs, BULK_CHUNK):
        _post_bulk(client, tag, range(start, min(jobs, start + BULK_CHUNK)))


def submit_arrivals(client: Any, tag: str, *, rate: float, duration: float) -> int:
    """``rate`` jobs/s for ``duration`` s, a burst every ``BURST_S``; returns the jobs sent.

    Bursts keep to the wall clock: one that is late (the submitter shares the cores with
    the cluster) goes at once, and the offered rate in the report says how late they ran.
    """
    total = round(rate * duration)
    start = time.monotonic()
    burst = 0
    sent = 0
    while sent < total:
        due = start + burst * BURST_S
        time.sleep(max(0.0, due - time.monotonic()))
        upto = min(total, round((burst + 1) * BURST_S * rate))
        if upto > sent:
            _post_bulk(client, tag, range(sent, upto))
            sent = upto
        burst += 1
    return sent


def wait_all_terminal(
    jobs: int, *, timeout: float, cluster: subprocess.Popen[bytes], log_path: Path
) -> None:
    from django.db.models import Count

    from llmqueue.models import TERMINAL, Job

    deadline = time.monotonic() + timeout
    while Job.objects.filter(status__in=TERMINAL).count() < jobs:
        if cluster.poll() is None and time.monotonic() <= deadline:
            time.sleep(POLL_S)
            continue
        counts = dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by())
        tail = log_path.read_text(errors="replace")[-3000:]
        if cluster.poll() is not None:
            problem = f"qcluster exited with code {cluster.returncode} mid-run"
        else:
            problem = f"not all {jobs} jobs finished within {timeout:g} s"
        raise RuntimeError(f"{problem}: {counts}; the cluster's log ends:\n{tail}")


# --- the report -----------------------------------------------------------------------------------


def _pct(values: list[float]) -> tuple[float | None, float | None]:
    """(p50, p99), rounded to a tenth."""
    if len(values) < 2:
        return (round(values[0], 1), round(values[0], 1)) if values else (None, None)
    q = statistics.quantiles(values, n=100, method="inclusive")
    return round(q[49], 1), round(q[98], 1)


def endpoint_report(ups: list[Upstream], *, makespan: float) -> dict[str, dict[str, Any]]:
    """Per endpoint: its calls and share, its call times, and how busy it was kept.

    ``mean_in_flight`` is the calls' busy time over the makespan (Little's law);
    ``mean_held`` counts a job from its claim until its result is written, which is how
    long ``dispatch.endpoint_in_flight`` (running jobs under a lease) sees it in flight.
    ``held`` is exact for jobs of one attempt, which is all of them when nothing fails.
    """
    from llmqueue.models import Endpoint, Job, JobAttempt

    durations: dict[str, list[float]] = defaultdict(list)
    for name, ms in JobAttempt.objects.values_list("endpoint_name", "duration_ms"):
        durations[name].append(ms or 0.0)
    held: dict[str, list[float]] = defaultdict(list)
    for name, started, finished in Job.objects.filter(finished_at__isnull=False).values_list(
        "endpoint__name", "started_at", "finished_at"
    ):
        held[name].append((finished - started).total_seconds() * 1000)
    ewma = dict(Endpoint.objects.values_list("name", "latency_ms"))
    calls = sum(len(v) for v in durations.values())
    report = {}
    for u in ups:
        log = _standin(u, "/log")
        p50, p99 = _pct(durations[u.name])
        report[u.name] = {
            "latency_ms": u.latency_ms,
            "calls": len(durations[u.name]),
            "share": round(len(durations[u.name]) / calls, 4) if calls else 0.0,
            "upstream_p50_ms": p50,
            "upstream_p99_ms": p99,
            "held_p50_ms": _pct(held[u.name])[0],
            "mean_in_flight": round(sum(durations[u.name]) / 1000 / makespan, 1),
            "mean_held": round(sum(held[u.name]) / 1000 / makespan, 1),
            "max_in_flight": log["max_in_flight"],  # as the stand-in saw it
            "standin_calls": len(log["calls"]),
            "ewma_ms_at_end": None if ewma.get(u.name) is None else round(ewma[u.name], 1),
        }
    return report


def measure(ups: list[Upstream], *, t0: Any, submitted_at: Any) -> dict[str, Any]:
    """What the rows of one run say; ``t0`` is the moment before the first submission."""
    from llmqueue.models import Job, JobAttempt, Status

    rows = list(Job.objects.values_list("status", "created_at", "started_at", "finished_at"))
    statuses = Counter(status for status, *_ in rows)
    done = [r for r in rows if r[3] is not None]
    makespan = (max(r[3] for r in done) - t0).total_seconds()
    e2e_p50, e2e_p99 = _pct([(f - c).total_seconds() * 1000 for _, c, _, f in done])
    wait_p50, wait_p99 = _pct([(s - c).total_seconds() * 1000 for _, c, s, _ in rows if s])
    durations = [ms or 0.0 for ms in JobAttempt.objects.values_list("duration_ms", flat=True)]
    up_p50, up_p99 = _pct(durations)
    endpoints = endpoint_report(ups, makespan=makespan)
    return {
        "jobs": len(rows),
        "succeeded": statuses.get(Status.SUCCEEDED, 0),
        "dead": statuses.get(Status.DEAD, 0),
        "attempts": len(durations),
        "slow_share": endpoints[SLOW]["share"],
        "e2e_p50_ms": e2e_p50,
        "e2e_p99_ms": e2e_p99,
        "upstream_p50_ms": up_p50,
        "upstream_p99_ms": up_p99,
        "wait_p50_ms": wait_p50,
        "wait_p99_ms": wait_p99,
        "submit_s": round((submitted_at - t0).total_seconds(), 3),
        "makespan_s": round(makespan, 3),
        "jobs_per_s": round(len(done) / makespan, 1),
        "endpoints": endpoints,
    }


# --- the runs -------------------------------------------------------------------------------------


def run_one(
    args: argparse.Namespace, mode: str, strategy: str, ups: list[Upstream], client: Any, tmp: Path
) -> dict[str, Any]:
    from django.utils import timezone

    reset_state(ups)
    tag = f"{mode}-{strategy}-{uuid.uuid4().hex[:6]}"
    log_path = tmp / f"qcluster-{mode}-{strategy}.log"
    cluster = start_cluster(strategy, log_path)
    try:
        t0 = timezone.now()
        if mode == "backlog":
            submit_backlog(client, tag, args.jobs)
            jobs = args.jobs
        else:
            jobs = submit_arrivals(client, tag, rate=args.arrival_rate, duration=args.duration)
        submitted_at = timezone.now()
        wait_all_terminal(jobs, timeout=args.timeout, cluster=cluster, log_path=log_path)
    finally:
        stop_cluster(cluster)
    result = {"mode": mode, "strategy": strategy, **measure(ups, t0=t0, submitted_at=submitted_at)}
    if mode == "arrival":
        result["arrival_rate"] = args.arrival_rate
        result["offered_per_s"] = round(jobs / max(result["submit_s"], 1e-9), 1)
    return result


def print_table(mode: str, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    if mode == "backlog":
        title = f"backlog: {args.jobs} jobs at once"
    else:
        title = f"arrival: {args.arrival_rate:g} jobs/s for {args.duration:g} s"
    fast, slow = args.latency_ms, args.latency_ms * args.slow_factor
    print(f"\n{title}; endpoints 2 x {fast:g} ms + 1 x {slow:g} ms; {args.inflight} in flight")
    header = (
        f"{'strategy':<21} {'slow share':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'up p50':>7} {'up p99':>7} {'makespan':>9} {'jobs/s':>7} {'slow in-flight':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        slow_ep = r["endpoints"][SLOW]
        print(
            f"{r['strategy']:<21} {r['slow_share']:>10.1%} {r['e2e_p50_ms']:>8.0f} "
            f"{r['e2e_p99_ms']:>8.0f} {r['upstream_p50_ms']:>7.0f} {r['upstream_p99_ms']:>7.0f} "
            f"{r['makespan_s']:>8.2f}s {r['jobs_per_s']:>7.0f} "
            f"{slow_ep['mean_in_flight']:>6.1f} (max {slow_ep['max_in_flight']:>3})"
        )
    print(
        "p50/p99: created -> finished per job; up: upstream call time (JobAttempt.duration_ms);"
        " slow in-flight: mean (busy time / makespan) and max seen by the stand-in"
    )


def run(args: argparse.Namespace, tmp: Path) -> None:
    configure(args, tmp)
    from django.contrib.auth import get_user_model
    from django.test import Client

    modes = ["backlog", "arrival"] if args.mode == "both" else [args.mode]
    with upstreams(args) as ups:
        user = get_user_model().objects.create_user(username=f"bench-{uuid.uuid4().hex[:8]}")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        for mode in modes:
            results = []
            for strategy in args.strategies:
                print(f"[{mode}] {strategy} ...", file=sys.stderr, flush=True)
                result = run_one(args, mode, strategy, ups, client, tmp)
                results.append(result)
                print("RESULT " + json.dumps(result), flush=True)
            print_table(mode, args, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("backlog", "arrival", "both"), default="backlog")
    parser.add_argument("--jobs", type=int, default=3000, help="backlog mode: jobs at once")
    parser.add_argument("--arrival-rate", type=float, default=300.0, help="arrival mode: jobs/s")
    parser.add_argument("--duration", type=float, default=20.0, help="arrival mode: seconds")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the fast endpoints'")
    parser.add_argument("--slow-factor", type=float, default=10.0, help="the slow one: x latency")
    parser.add_argument(
        "--strategies",
        type=lambda s: [name.strip() for name in s.split(",") if name.strip()],
        default=list(STRATEGIES),
        help="comma separated, default: all four",
    )
    parser.add_argument("--max-concurrency", type=int, default=1000, help="per endpoint")
    parser.add_argument("--inflight", type=int, default=64, help="calls in flight in the drain")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for all jobs")
    args = parser.parse_args()
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies: {', '.join(sorted(unknown))}")
    if args.latency_ms <= 0 or args.slow_factor <= 0:
        parser.error("--latency-ms and --slow-factor must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="llmqueue-bench-balancer-"))
    try:
        run(args, tmp)
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
