"""A thousand clients waiting on one web process: what it costs while they wait.

    .venv/bin/python bench/waiters.py [--waiters 1000] [--latency-ms 15000] [--server uvicorn]
        [--poll-s 0.2]

A fresh SQLite database, the stand-in endpoint (with ``--latency-ms``, so the calls wait), a
qcluster, and the web app on ``--server`` (uvicorn or granian, one worker process). Then
``--waiters`` concurrent ``POST /v1/chat/completions`` calls; once every one is queued, for
5 s while they wait: ``/healthz`` latency (p50, p99, every 50 ms), the web process's database
queries per second (all of them: django-prometheus' database wrapper, ``bench/waiters_settings``),
its threads and its memory (RSS). Then it checks that every call got its answer.
Prints a table and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def worker_pid(pid: int) -> int:
    """The process that serves: granian's supervisor forks its worker; uvicorn serves itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def proc_status(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) // 1024, "threads": int(fields["Threads"])}


def setup(env: dict[str, str]) -> str:
    code = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from django.contrib.auth import get_user_model\n"
        "from llmqueue.keys import apikey_create\n"
        "from llmqueue.models import Endpoint\n"
        "u = get_user_model().objects.create_user(username='bench', password='x')\n"
        f"Endpoint.objects.create(name='standin', base_url='{env['STANDIN']}',"
        " served_models=['echo'], max_concurrency=1000)\n"
        "print(apikey_create(owner=u, name='bench')[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def server_command(server: str, port: int) -> list[str]:
    app = "project.asgi:application"
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", *listen, app]
    return [sys.executable, "-m", "uvicorn", app, *listen, "--no-access-log"]


async def calls(url: str, key: str, n: int) -> list[int]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "echo", "messages": [{"role": "user", "content": f"b{i}"}]},
                )
                for i in range(n)
            )
        )
    return [a.status_code for a in answers]


def measure(url: str, pid: int, seconds: float) -> dict[str, Any]:
    queries0, polls0, t0 = (
        metric(url, "django_db_execute_total"),
        metric(url, "llmqueue_wait_polls_total"),
        time.monotonic(),
    )
    health: list[float] = []
    status = proc_status(pid)
    while time.monotonic() - t0 < seconds:
        started = time.monotonic()
        httpx.get(f"{url}/healthz", timeout=10).raise_for_status()
        health.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    queries = metric(url, "django_db_execute_total") - queries0
    polls = metric(url, "llmqueue_wait_polls_total") - polls0
    health.sort()
    return {
        "healthz_p50_ms": round(statistics.median(health), 1),
        "healthz_p99_ms": round(health[int(len(health) * 0.99) - 1], 1),
        # less the /metrics scrapes' own state queries, which the measure itself causes
        "queries_per_s": round(queries / elapsed, 1),
        "poller_queries_per_s": round(polls / elapsed, 1),
        **status,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=15000)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--poll-s", default="0.2")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmqueue-waiters-"))
    (tmp / "prom").mkdir()
    standin_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "STANDIN": f"http://127.0.0.1:{standin_port}/v1",
        "LLMQUEUE_DRAIN_CONCURRENCY": str(args.waiters),
        "LLMQUEUE_WAIT_POLL_S": args.poll_s,
        "PYTHONPATH": str(ROOT),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmqueue.standin",
                    "--port",
                    str(standin_port),
                    "--latency-ms",
                    str(args.latency_ms),
                ],
                cwd=ROOT,
            )
        )
        wait_for(f"http://127.0.0.1:{standin_port}/v1/models")
        key = setup(env)
        log = open(tmp / "cluster.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        )
        web_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.waiters_settings"}
        web = subprocess.Popen(
            server_command(args.server, web_port),
            cwd=ROOT,
            env=web_env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "web.log", "wb"),  # noqa: SIM115
        )
        procs.append(web)
        url = f"http://127.0.0.1:{web_port}"
        wait_for(f"{url}/healthz")
        serving = worker_pid(web.pid)
        idle = proc_status(serving)
        results: list[int] = []
        runner = threading.Thread(
            target=lambda: results.extend(asyncio.run(calls(url, key, args.waiters)))
        )
        started = time.monotonic()
        runner.start()
        # every call submitted (the stand-in's latency keeps them waiting)
        while metric(url, "llmqueue_jobs_submitted_total") < args.waiters:
            time.sleep(0.2)
        submitted_s = time.monotonic() - started
        during = measure(url, serving, 5.0)
        runner.join()
        result = {
            "server": args.server,
            "waiters": args.waiters,
            "submit_all_s": round(submitted_s, 1),
            "all_answered_s": round(time.monotonic() - started, 1),
            "answers_200": results.count(200),
            "idle_rss_mb": idle["rss_mb"],
            **during,
        }
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    for name, value in result.items():
        print(f"{name:24} {value}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
