"""Embeddings with and without micro-batching, side by side in one run (llmqueue.worker.batching).

    .venv/bin/python bench/embeddings.py [--jobs 5000] [--inflight 64] [--workers 1]
        [--latency-ms 20] [--per-input-ms 0.2] [--batch-max 64] [--batch-wait-ms 20]
        [--timeout 300]

One stand-in endpoint (``llmqueue.standin``) whose call costs ``--latency-ms`` plus
``--per-input-ms`` for each input, as a batching server's does, and one fresh SQLite database.
Then, for each mode ("merged": EMBED_BATCHING on, "alone": off), in this order:

1. ``manage.py qcluster`` with ``--workers`` drains of ``--inflight`` calls each, the mode's
   settings in its environment; the run starts once its start-up drains lingered out;
2. ``--jobs`` single-input embedding jobs of a fresh user (distinct texts: no cache hits),
   submitted through ``POST /api/jobs/bulk/`` (Django's test client, in this process),
   1000 a request;
3. jobs/s = jobs / (last ``finished_at`` - the moment before the first submission); the
   stand-in's calls and inputs meanwhile (its ``/log``); the worker CPU (the cluster's process
   tree, as bench/throughput.py measures it).

Prints a table and one ``RESULT {json}`` line. Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
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
    BULK_CHUNK,
    CpuTree,
    _post,
    code_version,
    configure,
    settle_s,
    start_cluster,
    stop_cluster,
    wait_all_terminal,
    wait_idle,
)
from bench.upstream_clients import standin_process  # noqa: E402

MODES = {"merged": "true", "alone": "false"}


def standin_log(base_url: str) -> list[int]:
    """The inputs of each embeddings call the stand-in answered so far."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/log", timeout=10) as r:
        log = json.loads(r.read())
    return [n for c, n in zip(log["calls"], log["inputs"], strict=True) if c[1] == "/v1/embeddings"]


def submit_embeddings(client: Any, jobs: int, *, tag: str) -> None:
    for start in range(0, jobs, BULK_CHUNK):
        end = min(jobs, start + BULK_CHUNK)
        specs = [
            {"kind": "embedding", "payload": {"model": "echo", "input": f"{tag} text {i}"}}
            for i in range(start, end)
        ]
        _post(client, "/api/jobs/bulk/", {"jobs": specs})


def run_mode(args: argparse.Namespace, tmp: Path, mode: str, base_url: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db.models import Max
    from django.test import Client
    from django.utils import timezone

    from llmqueue.models import Job, Status

    os.environ["LLMQUEUE_EMBED_BATCHING"] = MODES[mode]
    user = get_user_model().objects.create_user(username=f"bench-{mode}-{uuid.uuid4().hex[:6]}")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    cluster = start_cluster(tmp / f"qcluster-{mode}.log")
    tree = CpuTree(cluster.pid)
    try:
        if not wait_idle(timeout=settle_s()):
            print("warning: the cluster did not settle before the run", file=sys.stderr)
        calls_before = len(standin_log(base_url))
        tree.start()
        t0 = timezone.now()
        submit_embeddings(client, args.jobs, tag=f"{mode}-{uuid.uuid4().hex[:6]}")
        counts = wait_all_terminal(user, args.jobs, timeout=args.timeout, on_poll=tree.sample)
        cpu_s = tree.seconds()
        t1 = Job.objects.filter(owner=user).aggregate(t=Max("finished_at"))["t"]
        calls = standin_log(base_url)[calls_before:]
    finally:
        stop_cluster(cluster, tree)
    elapsed = (t1 - t0).total_seconds()
    inputs = sum(calls)
    return {
        "succeeded": counts.get(Status.SUCCEEDED, 0),
        "dead": counts.get(Status.DEAD, 0),
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(args.jobs / elapsed, 1),
        "upstream_calls": len(calls),
        "inputs_per_call": round(inputs / max(1, len(calls)), 1),
        "largest_call": max(calls, default=0),
        "worker_cpu_ms_per_job": round(cpu_s * 1000 / args.jobs, 3),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    os.environ["LLMQUEUE_EMBED_BATCH_MAX"] = str(args.batch_max)
    os.environ["LLMQUEUE_EMBED_BATCH_WAIT_MS"] = f"{args.batch_wait_ms:g}"
    configure(args, tmp)
    from llmqueue.models import Endpoint

    with standin_process(
        latency_ms=args.latency_ms, latency_per_input_ms=args.per_input_ms
    ) as server:
        Endpoint.objects.create(
            name="standin",
            base_url=server.base_url,
            served_models=["echo"],
            max_concurrency=10000,
        )
        modes = {mode: run_mode(args, tmp, mode, server.base_url) for mode in MODES}
    return {
        "code": code_version(),
        "jobs": args.jobs,
        "inflight": args.inflight,
        "workers": args.workers,
        "latency_ms": args.latency_ms,
        "per_input_ms": args.per_input_ms,
        "batch_max": args.batch_max,
        "batch_wait_ms": args.batch_wait_ms,
        **modes,
        "speedup": round(modes["merged"]["jobs_per_s"] / modes["alone"]["jobs_per_s"], 2),
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{r['jobs']} embedding jobs, {r['workers']} drain(s) x {r['inflight']} in flight, "
        f"stand-in {r['latency_ms']:g} ms + {r['per_input_ms']:g} ms per input, "
        f"EMBED_BATCH_MAX={r['batch_max']} EMBED_BATCH_WAIT_MS={r['batch_wait_ms']:g}"
    )
    rows = [
        ("jobs/s", "jobs_per_s"),
        ("upstream calls", "upstream_calls"),
        ("inputs per call", "inputs_per_call"),
        ("largest call", "largest_call"),
        ("worker CPU ms/job", "worker_cpu_ms_per_job"),
        ("succeeded", "succeeded"),
        ("dead", "dead"),
        ("elapsed s", "elapsed_s"),
    ]
    print(f"{'':20} {'merged':>10} {'alone':>10}")
    for label, key in rows:
        print(f"{label:20} {r['merged'][key]!s:>10} {r['alone'][key]!s:>10}")
    print(f"merged / alone jobs/s: {r['speedup']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--per-input-ms", type=float, default=0.2)
    parser.add_argument("--batch-max", type=int, default=64)
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    args.database_url = None
    args.redis = None
    with tempfile.TemporaryDirectory(prefix="llmqueue-bench-") as tmp:
        started = time.monotonic()
        result = run(args, Path(tmp))
    print_table(result)
    print(f"(run took {time.monotonic() - started:.0f} s)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
