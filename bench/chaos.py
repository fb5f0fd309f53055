"""Chaos soak: two hosts drain one queue while one of them is killed with SIGKILL every 4-8 s.

    .venv/bin/python bench/chaos.py [--jobs 10000] [--phase-jobs 3000] [--latency-ms 50]
        [--postgres postgres://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/5]
        [--max-concurrency 64] [--inflight 32] [--drains 2] [--seed N]

One run, from the repository root's code:

1. a database of its own, ``llmqueue_chaos_<pid>``, created on ``--postgres`` and migrated
   (dropped at the end), and the Redis broker on ``--redis`` with a django-q2 queue name of its
   own (its keys deleted at the end): nothing is shared with other runs;
2. the stand-in endpoint (``llmqueue.standin``) with ``--latency-ms``, one Endpoint row for it
   with ``--max-concurrency`` (less than the fleet's places, so that a dead host's claims, which
   count against it, would stall the others: what issue 14 saw);
3. two hosts: ``manage.py llmqueue_worker`` twice, with ``LLMQUEUE_HOST_NAME`` chaos-a and
   chaos-b, so that each takes its own ``--drains`` drain slots on this one machine;
4. four phases, each submitting its jobs at once (unique prompts) and waiting for all to end:
   one host undisturbed (``--phase-jobs``), two hosts undisturbed (``--phase-jobs``), one host
   under kills (``--jobs``), and the soak proper: two hosts, ``--jobs`` jobs, under kills.
   Under kills, at a random moment every 4-8 s a host's whole process group is frozen
   (SIGSTOP), its claims counted, killed (SIGKILL) and started again.

Each phase checks: every job succeeded; every prompt reached the stand-in; repeated calls (calls
beyond one per job) are at most what the killed hosts held claimed when killed; and the fleet
never went more than 5 s with work queued and nothing finishing (gaps between finishes, from
the submission on; reported but not judged for one host under kills, where a kill leaves no
survivor and the gap is the restart). Prints a table and one ``RESULT {json}`` line; exits 1
if a check failed.

``run_phase`` is also what the test suite's short soak runs (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: the longest the fleet may go with work queued and nothing finishing
STALL_LIMIT_S = 5.0
SUBMIT_CHUNK = 1000


@dataclass
class Host:
    """One host of the fleet: a `manage.py llmqueue_worker` with its own LLMQUEUE_HOST_NAME."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "llmqueue_worker"],
                cwd=ROOT,
                env={**os.environ, **self.env, "LLMQUEUE_HOST_NAME": self.name},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: what a kill takes whole
            )
        self.starts += 1

    def kill(self) -> int:
        """SIGKILL the whole process group; returns how many claims it held at that moment.

        Frozen first (SIGSTOP), so that it claims nothing between the count and the kill, and
        its pids still run: nobody gives its claims back before they are counted."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            held = claims_of(self.name)
        finally:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return held

    def stop(self) -> None:
        """The clean stop (SIGTERM to the group, as systemd does); SIGKILL if it overstays."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def claims_of(host: str) -> int:
    """Running jobs claimed by ``host``'s drains (their lease tokens start with the tags of
    the owners of its slots)."""
    from django.db.models import Q

    from llmqueue.models import DrainSlot, Job, Status
    from llmqueue.worker.slots import owner_tag

    owners = DrainSlot.objects.filter(host=host, owner__isnull=False).values_list(
        "owner", flat=True
    )
    tags = [t for t in (owner_tag(o or "") for o in owners) if t]
    if not tags:
        return 0
    held = Q(pk__in=[])
    for tag in tags:
        held |= Q(lease_token__startswith=tag)
    return Job.objects.filter(held, status=Status.RUNNING).count()


def standin_log(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/log", timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    urllib.request.urlopen(req, timeout=10).close()


def standin_reset(url: str) -> None:
    _post(f"{url}/reset", {})


def standin_control(url: str, **settings: Any) -> None:
    _post(f"{url}/control", settings)


@dataclass
class PhaseResult:
    name: str
    hosts: int
    jobs: int
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    kills: list[int] = field(default_factory=list)  # claims the killed host held, per kill
    max_stall_s: float = 0.0
    calls: int = 0
    repeated: int = 0
    not_succeeded: int = 0
    missing_prompts: int = 0
    problems: list[str] = field(default_factory=list)


def run_phase(
    name: str,
    hosts: list[Host],
    *,
    jobs: int,
    owner: Any,
    standin_url: str,
    kill: bool,
    rng: random.Random,
    timeout_s: float = 600.0,
    kill_every_s: tuple[float, float] = (4.0, 8.0),
    max_kills: int | None = None,
    latency_ms: float | None = None,
) -> PhaseResult:
    """Submit ``jobs`` chat jobs at once, wait for all to end (killing a random host every
    ``kill_every_s`` when ``kill``), and check the run (see the module's docstring)."""
    from django.utils import timezone

    from llmqueue.jobs import JobSpec, jobs_submit_many
    from llmqueue.models import Job, Status

    result = PhaseResult(name=name, hosts=len(hosts), jobs=jobs)
    for h in hosts:
        if h.proc is None or h.proc.poll() is not None:
            h.start()
    standin_reset(standin_url)
    if latency_ms is not None:
        standin_control(standin_url, latency_ms=latency_ms)
    prompts = [f"{name} {uuid.uuid4().hex[:8]} {i}" for i in range(jobs)]
    started = timezone.now()
    next_kill = time.monotonic() + rng.uniform(*kill_every_s)  # submitting takes seconds too
    batches: list[int] = []
    for at in range(0, jobs, SUBMIT_CHUNK):
        specs = [
            JobSpec(
                kind="chat", payload={"model": "echo", "messages": [{"role": "user", "content": p}]}
            )
            for p in prompts[at : at + SUBMIT_CHUNK]
        ]
        batches.append(jobs_submit_many(owner=owner, specs=specs, name=name)[0].pk)
    mine = Job.objects.filter(batch_id__in=batches)
    ended = {Status.SUCCEEDED, Status.DEAD, Status.CANCELLED}
    deadline = time.monotonic() + timeout_s
    while mine.exclude(status__in=ended).exists():
        if time.monotonic() > deadline:
            result.problems.append(f"not finished within {timeout_s:g} s")
            break
        if (
            kill
            and time.monotonic() >= next_kill
            and (max_kills is None or len(result.kills) < max_kills)
        ):
            victim = rng.choice(hosts)
            result.kills.append(victim.kill())
            victim.start()
            next_kill = time.monotonic() + rng.uniform(*kill_every_s)
        time.sleep(0.25)
    finished = sorted(t for t in mine.values_list("finished_at", flat=True) if t)
    result.not_succeeded = mine.exclude(status=Status.SUCCEEDED).count()
    if finished:
        result.seconds = round((finished[-1] - started).total_seconds(), 2)
        result.jobs_per_s = round(jobs / max(result.seconds, 1e-6), 1)
        moments = [started, *finished]
        gaps = (b - a for a, b in itertools.pairwise(moments))
        result.max_stall_s = round(max(g.total_seconds() for g in gaps), 2)
    # Calls a kill cut off still end at the stand-in (it finishes what it started): let them.
    time.sleep(1.0 + 2 * float(os.environ.get("CHAOS_LATENCY_S", "0")) + (latency_ms or 0) / 500)
    log = standin_log(standin_url)
    result.calls = len(log["prompts"])
    result.repeated = result.calls - jobs
    result.missing_prompts = len(set(prompts) - set(log["prompts"]))
    if result.not_succeeded:
        result.problems.append(f"{result.not_succeeded} jobs did not succeed")
    if result.missing_prompts:
        result.problems.append(f"{result.missing_prompts} prompts never reached the stand-in")
    if result.repeated > sum(result.kills):
        result.problems.append(
            f"{result.repeated} repeated calls, more than the {sum(result.kills)} claims held"
            " by the killed hosts"
        )
    # With one host, a kill leaves nobody: the stall is its restart, reported but not judged.
    if result.max_stall_s > STALL_LIMIT_S and (len(hosts) > 1 or not kill):
        result.problems.append(f"{result.max_stall_s} s with work queued and nothing finishing")
    return result


# --- the bench's own setup ----------------------------------------------------------------------


def create_database(admin_url: str) -> str:
    """A database of this run's own on the server of ``admin_url``; returns its URL."""
    import psycopg

    name = f"llmqueue_chaos_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(admin_url: str, url: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def configure(args: argparse.Namespace, database_url: str, queue: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = args.redis
    os.environ["Q_CLUSTER_NAME"] = queue
    os.environ["LLMQUEUE_DRAINS_PER_HOST"] = str(args.drains)
    os.environ["LLMQUEUE_DRAIN_CONCURRENCY"] = str(args.inflight)
    os.environ["CHAOS_LATENCY_S"] = str(args.latency_ms / 1000)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="llmqueue-chaos-"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def print_table(results: list[PhaseResult]) -> None:
    print(
        f"{'phase':<24}{'hosts':>6}{'jobs':>7}{'s':>8}{'jobs/s':>9}{'kills':>6}"
        f"{'held':>6}{'repeat':>7}{'stall s':>8}  problems"
    )
    for r in results:
        print(
            f"{r.name:<24}{r.hosts:>6}{r.jobs:>7}{r.seconds:>8}{r.jobs_per_s:>9}{len(r.kills):>6}"
            f"{sum(r.kills):>6}{r.repeated:>7}{r.max_stall_s:>8}  {'; '.join(r.problems) or 'none'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--phase-jobs", type=int, default=3_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--drains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    queue = f"chaos-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    database_url = create_database(args.postgres)
    tmp = Path(tempfile.mkdtemp(prefix="llmqueue-chaos-logs-"))
    hosts: list[Host] = []
    results: list[PhaseResult] = []
    try:
        configure(args, database_url, queue)
        from django.contrib.auth import get_user_model

        from bench.upstream_clients import standin_process
        from llmqueue.models import Endpoint

        with standin_process(latency_ms=args.latency_ms) as standin:
            url = standin.base_url.removesuffix("/v1")
            Endpoint.objects.create(
                name="standin",
                base_url=standin.base_url,
                served_models=["echo"],
                max_concurrency=args.max_concurrency,
            )
            owner = get_user_model().objects.create_user(username=f"chaos-{uuid.uuid4().hex[:6]}")
            hosts = [Host(n, {}, tmp / f"{n}.log") for n in ("chaos-a", "chaos-b")]
            one, two = hosts[:1], hosts
            # A first success takes the new endpoint off probation (a few calls at a time).
            run_phase("warm-up", one, jobs=10, owner=owner, standin_url=url, kill=False, rng=rng)
            plan = [
                ("one host", one, args.phase_jobs, False),
                ("two hosts", two, args.phase_jobs, False),
                ("one host, kills", one, args.jobs, True),
                ("two hosts, kills", two, args.jobs, True),
            ]
            for name, fleet, jobs, kill in plan:
                for h in hosts:
                    if h not in fleet:
                        h.stop()
                results.append(
                    run_phase(
                        name, fleet, jobs=jobs, owner=owner, standin_url=url, kill=kill, rng=rng
                    )
                )
                print_table(results[-1:])
            for h in hosts:
                h.stop()
    finally:
        for h in hosts:
            h.stop()
        with contextlib.suppress(Exception):
            import redis

            r = redis.Redis.from_url(args.redis)
            for key in r.scan_iter(f"*{queue}*"):
                r.delete(key)
        drop_database(args.postgres, database_url)
    print()
    print_table(results)
    print(f"seed {seed}; logs in {tmp}")
    print("RESULT " + json.dumps({"seed": seed, "phases": [asdict(r) for r in results]}))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
