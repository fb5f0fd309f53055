"""End-to-end throughput of the queue, against the client ceiling on the same stand-in endpoint.

    .venv/bin/python bench/throughput.py [--jobs 5000] [--inflight 64] [--workers 1]
        [--endpoint-concurrency 10000]
        [--latency-ms 100] [--timeout 300] [--idle-samples 10] [--ceiling-calls N]
        [--database-url postgres://...] [--redis redis://...] [--profile stacks.txt]
        [--repeat N]

One run, from the repository root's code:

1. a fresh SQLite file in a temp directory (or ``--database-url``, which must name a database
   used by nothing else: every queued job in it is drained), migrated;
2. the stand-in endpoint (``llmqueue.standin``) in a subprocess, and an Endpoint row for it;
3. the ceiling: ``bench/upstream_clients.ceiling`` (the best of llmqueue's own client and
   aiohttp alone) at the same total in-flight level (``--inflight`` x ``--workers``, or the
   endpoint's ``--endpoint-concurrency`` if lower);
4. ``manage.py qcluster`` in a subprocess with ``--workers`` drain slots of ``--inflight``
   calls each; once it is up and idle (its start-up drains have lingered out), ``--jobs``
   chat jobs are submitted through ``POST /api/jobs/bulk/`` (Django's test client, in this
   process: the real view, serializer and service), 1000 per request; the API is warm, as a
   served one is (one bulk submission of another user's jobs before the cluster starts);
   jobs/s = jobs / (last ``finished_at`` - the moment before the first submission);
5. the worker CPU: utime + stime of the qcluster process and all its descendants
   (``/proc/<pid>/stat``), from just before submission until all jobs finished; beside it,
   where the machine's cores went meanwhile (a busy neighbour shows as "other processes"),
   and the run's shape from the rows it left (claims, writes, how busy the call places were);
6. submit-to-upstream-call latency (first ``JobAttempt.started_at`` - ``Job.created_at``) of
   single jobs via ``POST /api/jobs/``: "idle" with no drain alive (each waits until the
   previous one's drain has exited), then "warm" while a drain lingers.

With ``--profile FILE`` (needs ``.venv/bin/pip install py-spy``), py-spy samples the cluster
during step 4 and writes collapsed stacks (for flamegraph.pl or speedscope) to FILE; the numbers
of such a run are not comparable with the others.

Prints a table and one ``RESULT {json}`` line. Everything started is stopped at the end. With
``--repeat N``, N such runs, one process each, then the median and range of each figure and a
``SUMMARY {json}`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.upstream_clients import ceiling, chat_payload, cpu_seconds, standin_process  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BULK_CHUNK = 1000
#: how often the benchmark looks whether all jobs finished; the run's end is read from the rows
#: (the last finished_at), so a slower poll only keeps the benchmark's own CPU off the cores
POLL_S = 0.25


# --- CPU from /proc -----------------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, start time in ticks, CPU seconds) for every process there is."""
    stats: dict[int, tuple[int, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name may hold spaces and parentheses: split after the last ")".
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # it exited meanwhile
            continue
        # fields[0] is stat field 3 (state): ppid is 4, utime 14, stime 15, starttime 22.
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        stats[int(entry)] = (int(fields[1]), int(fields[19]), cpu)
    return stats


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # less idle and iowait


class CpuTree:
    """CPU used by a process and all its descendants since ``start()``.

    Call ``sample()`` often enough to see short-lived descendants before they exit: a process
    counts up to its last sample. Processes are keyed by (pid, start time) against pid reuse.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], float] = {}
        self.depth: dict[tuple[int, int], int] = {}

    def _walk(self) -> dict[tuple[int, int], float]:
        stats = _proc_stats()
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _, _) in stats.items():
            children[ppid].append(pid)
        seen: dict[tuple[int, int], float] = {}
        todo = [(self.root, 0)]
        while todo:
            pid, depth = todo.pop()
            if pid not in stats:
                continue
            _, started, cpu = stats[pid]
            seen[(pid, started)] = cpu
            self.depth[(pid, started)] = depth
            todo.extend((child, depth + 1) for child in children[pid])
        return seen

    def start(self) -> None:
        self.first = self._walk()
        self.last = dict(self.first)

    def sample(self) -> None:
        for key, cpu in self._walk().items():
            self.first.setdefault(key, 0.0)  # born after start(): all of its CPU counts
            self.last[key] = cpu

    def seconds(self) -> float:
        return sum(self.last[k] - self.first[k] for k in self.last)

    def by_process(self) -> list[dict[str, Any]]:
        """Each process's share, busiest first; depth 0 is qcluster, 1 its sentinel, 2 workers."""
        rows = [
            {"pid": k[0], "depth": self.depth[k], "cpu_s": round(self.last[k] - self.first[k], 3)}
            for k in self.last
        ]
        return sorted(rows, key=lambda r: -r["cpu_s"])

    def alive(self) -> list[int]:
        """Descendants seen so far that still run (same pid, same start time)."""
        stats = _proc_stats()
        return [pid for pid, started in self.last if stats.get(pid, (0, -1, 0))[1] == started]


class CpuBudget:
    """Where the machine's CPU went over a window, in cores: the workers (a ``CpuTree``), the
    stand-in, this process (submission and polling), and everything else on the machine."""

    def __init__(self, workers: CpuTree, standin_pid: int) -> None:
        self.workers = workers
        self.standin_pid = standin_pid
        self.first = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        return (
            time.monotonic(),
            machine_busy_s(),
            cpu_seconds(self.standin_pid),
            time.process_time(),
        )

    def start(self) -> None:
        self.workers.start()
        self.first = self._now()

    def stop(self) -> dict[str, float]:
        self.workers.sample()
        wall, machine, standin, own = (b - a for a, b in zip(self.first, self._now(), strict=True))
        workers = self.workers.seconds()
        cores = {
            "workers": workers / wall,
            "standin": standin / wall,
            "bench": own / wall,
            "others": (machine - workers - standin - own) / wall,
            "machine": machine / wall,
        }
        return {k: round(v, 2) for k, v in cores.items()}


# --- setup ----------------------------------------------------------------------------------------


def configure(args: argparse.Namespace, tmp: Path) -> None:
    """Environment for this process and the cluster, then Django, then migrate."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    if args.redis:
        os.environ["REDIS_URL"] = args.redis
    else:
        os.environ.pop("REDIS_URL", None)
    os.environ["LLMQUEUE_DRAINS_PER_HOST"] = str(args.workers)
    os.environ["LLMQUEUE_DRAIN_CONCURRENCY"] = str(args.inflight)
    os.environ["Q_CLUSTER_NAME"] = f"bench-{uuid.uuid4().hex[:8]}"
    import django
    from django.core.management import call_command

    django.setup()
    # whitenoise warns once per request handler that STATIC_ROOT was never collected.
    warnings.filterwarnings("ignore", message="No directory at")
    call_command("migrate", verbosity=0)


def make_endpoint_and_user(base_url: str, *, max_concurrency: int) -> Any:
    from django.contrib.auth import get_user_model

    from llmqueue.models import Endpoint

    Endpoint.objects.update_or_create(
        name="standin",
        defaults={
            "base_url": base_url,
            "served_models": ["echo"],
            "max_concurrency": max_concurrency,
        },
    )
    return get_user_model().objects.create_user(username=f"bench-{uuid.uuid4().hex[:8]}")


def start_cluster(log_path: Path, *, ready_s: float = 30.0) -> subprocess.Popen[bytes]:
    """``manage.py qcluster`` with this process's environment; returns once it says "running"."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env={**os.environ, "Q_LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see stop_cluster
        )
    deadline = time.monotonic() + ready_s
    while b"running" not in log_path.read_bytes():
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"qcluster exited with code {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f'qcluster did not log "running" within {ready_s:g} s')
        time.sleep(0.1)
    return proc


def stop_cluster(proc: subprocess.Popen[bytes], tree: CpuTree) -> None:
    """Stop it, SIGKILL after 10 s; then any descendant left behind is killed too.

    SIGINT to its process group is llmqueue's clean stop (``llmqueue.worker.slots``): each drain and
    the health checker end their task, the workers and the cluster exit. SIGTERM would not do:
    to the main process alone it waits for those long tasks; to the group it kills the
    sentinel, on whose death the main process then hangs.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in tree.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def profiled(pid: int, output: str) -> Iterator[None]:
    """With ``output``, py-spy samples ``pid`` and its subprocesses meanwhile (raw stacks)."""
    if not output:
        yield
        return
    spy = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    # Non-blocking: pausing the workers 100 times a second would slow what is measured.
    cmd = [
        spy,
        "record",
        "-p",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "-f",
        "raw",
        "-o",
        output,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        proc.wait(timeout=30)


# --- the runs -------------------------------------------------------------------------------------


def _post(client: Any, path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, body, content_type="application/json")
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST {path}: {response.status_code} {response.content[:500]!r}")
    return response.json()


def submit_bulk(client: Any, jobs: int, *, first: int = 0) -> list[float]:
    """Submit ``jobs`` chat jobs, BULK_CHUNK a request; returns when each request answered
    (``time.monotonic()``)."""
    answered = []
    for start in range(first, first + jobs, BULK_CHUNK):
        end = min(first + jobs, start + BULK_CHUNK)
        _post(
            client,
            "/api/jobs/bulk/",
            {"jobs": [{"payload": chat_payload(i)} for i in range(start, end)]},
        )
        answered.append(time.monotonic())
    return answered


def wait_all_terminal(
    user: Any, jobs: int, *, timeout: float, on_poll: Callable[[], None]
) -> dict[str, int]:
    """Poll until the user's ``jobs`` jobs are all terminal; returns the count per status."""
    from django.db.models import Count

    from llmqueue.models import TERMINAL, Job

    deadline = time.monotonic() + timeout
    while True:
        on_poll()
        counts = dict(
            Job.objects.filter(owner=user).values_list("status").annotate(n=Count("id")).order_by()
        )
        if sum(counts.get(s, 0) for s in TERMINAL) >= jobs:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {jobs} jobs finished within {timeout:g} s: {counts}")
        time.sleep(POLL_S)


def run_shape(
    user: Any, *, t0: datetime, t_submitted: datetime, t1: datetime, inflight: int
) -> dict[str, float]:
    """Why jobs/s is what it is, from the rows the run left.

    A claim stamps every job it takes with one ``started_at`` and a write stamps every result
    it records with one ``finished_at``, so counting distinct values counts claims and writes.
    ``upstream_busy`` is the share of the run's call places (in-flight x elapsed) spent in
    upstream calls; the rest went to waiting for the database steps and for work. The jobs/s
    while the submission ran and after it tell what the submitter's share of the machine
    (and of SQLite's write lock) costs the drains.
    """
    from django.db.models import Count, Min, Sum

    from llmqueue.models import Job, JobAttempt

    jobs = Job.objects.filter(owner=user)
    agg = jobs.aggregate(
        n=Count("id"),
        claims=Count("started_at", distinct=True),
        writes=Count("finished_at", distinct=True),
        first=Min("started_at"),
    )
    busy_ms = JobAttempt.objects.filter(job__owner=user).aggregate(ms=Sum("duration_ms"))["ms"]
    elapsed = (t1 - t0).total_seconds()
    submit_s = (t_submitted - t0).total_seconds()
    during = jobs.filter(finished_at__lte=t_submitted).count()
    per_half_s: dict[int, int] = defaultdict(int)  # jobs finished in each half second
    for at in jobs.values_list("finished_at", flat=True).iterator():
        per_half_s[int((at - t0).total_seconds() * 2)] += 1
    return {
        "finished_per_half_s": [per_half_s[i] for i in range(max(per_half_s) + 1)],
        "during_submit_per_s": round(during / submit_s, 1),
        "after_submit_per_s": round((agg["n"] - during) / max(1e-3, elapsed - submit_s), 1),
        "first_claim_s": round((agg["first"] - t0).total_seconds(), 3),
        "claims": agg["claims"],
        "jobs_per_claim": round(agg["n"] / agg["claims"], 1),
        "writes": agg["writes"],
        "results_per_write": round(agg["n"] / agg["writes"], 1),
        "upstream_busy": round(busy_ms / 1000 / (elapsed * inflight), 3),
    }


def drain_alive() -> bool:
    from llmqueue.worker.slots import slots_live

    return slots_live() > 0


def wait_idle(*, timeout: float) -> bool:
    """Until no drain holds a slot and no drain task waits in the broker, twice in a row."""
    from django_q.brokers import get_broker

    broker = get_broker()
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            return False
        quiet = quiet + 1 if not drain_alive() and broker.queue_size() == 0 else 0
        time.sleep(0.25)
    return True


def submit_to_call_ms(client: Any, n: int, *, timeout: float = 60.0) -> float:
    """Submit one job, wait for it, and return first attempt start - creation, in ms."""
    from llmqueue.models import Job, JobAttempt

    job_id = _post(client, "/api/jobs/", {"payload": chat_payload(n)})["id"]
    deadline = time.monotonic() + timeout
    while not Job.objects.get(pk=job_id).is_terminal:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s")
        time.sleep(0.02)
    created: datetime = Job.objects.values_list("created_at", flat=True).get(pk=job_id)
    started: datetime = (
        JobAttempt.objects.filter(job_id=job_id)
        .order_by("number")
        .values_list("started_at", flat=True)
        .first()
    )
    return (started - created).total_seconds() * 1000


def settle_s() -> float:
    """Long enough for a drain with nothing to do to linger out, and then some."""
    from llmqueue.conf import conf

    return conf.DRAIN_LINGER_S + 30


def latency_samples(client: Any, samples: int, *, first: int) -> dict[str, list[float]]:
    """Latencies of single jobs: "idle" with no drain alive, "warm" while a drain lingers."""
    from llmqueue.conf import conf

    idle: list[float] = []
    warm: list[float] = []
    for i in range(samples):
        if not wait_idle(timeout=settle_s()):
            print(
                "warning: the cluster did not go idle; skipping the idle samples", file=sys.stderr
            )
            break
        idle.append(submit_to_call_ms(client, first + i))
    for i in range(samples):
        # A lingering drain looks for work every DRAIN_POLL_S: arrive at a random point of that.
        time.sleep(random.uniform(0, conf.DRAIN_POLL_S))
        if not drain_alive():  # it lingered out: this sample would be an idle one
            break
        warm.append(submit_to_call_ms(client, first + samples + i))
    return {"idle": idle, "warm": warm}


def code_version() -> str | None:
    """The commit the code under test is at ("-dirty" with local changes); None outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    configure(args, tmp)
    from django.db.models import Max
    from django.test import Client
    from django.utils import timezone

    from llmqueue.models import Job, Status

    # what the queue can have in flight: its drains' places, or the endpoint's cap if lower
    total_inflight = min(args.inflight * args.workers, args.endpoint_concurrency)
    with standin_process(latency_ms=args.latency_ms) as server:
        user = make_endpoint_and_user(server.base_url, max_concurrency=args.endpoint_concurrency)
        roof = ceiling(
            server.base_url,
            calls=args.ceiling_calls or args.jobs,
            inflight=total_inflight,
            server_pid=server.pid,
        )
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        # A served API is warm: one bulk submission of another user's jobs first, which the
        # cluster drains as it starts (before the run, whose counts are this user's jobs).
        warm = Client(HTTP_HOST="localhost")
        warm.force_login(
            make_endpoint_and_user(server.base_url, max_concurrency=args.endpoint_concurrency)
        )
        submit_bulk(warm, BULK_CHUNK, first=10 * args.jobs)
        cluster = start_cluster(tmp / "qcluster.log")
        tree = CpuTree(cluster.pid)
        budget = CpuBudget(tree, server.pid)
        try:
            # Each worker wakes a drain as it starts (and imports the drain's modules): let that
            # settle, so that the run starts from an idle cluster and counts none of it.
            if not wait_idle(timeout=settle_s()):
                print("warning: the cluster did not settle before the run", file=sys.stderr)
            with profiled(cluster.pid, args.profile):
                budget.start()
                t0 = timezone.now()
                m0 = time.monotonic()
                answered = submit_bulk(client, args.jobs)
                t_submitted = timezone.now()
                submitted_s = (t_submitted - t0).total_seconds()
                counts = wait_all_terminal(
                    user, args.jobs, timeout=args.timeout, on_poll=tree.sample
                )
                cores = budget.stop()
            cpu_s = tree.seconds()
            t1 = Job.objects.filter(owner=user).aggregate(t=Max("finished_at"))["t"]
            shape = run_shape(user, t0=t0, t_submitted=t_submitted, t1=t1, inflight=total_inflight)
            latency = latency_samples(client, args.idle_samples, first=args.jobs)
        finally:
            stop_cluster(cluster, tree)
    elapsed = (t1 - t0).total_seconds()
    jobs_per_s = args.jobs / elapsed
    return {
        "code": code_version(),
        "jobs": args.jobs,
        "inflight": args.inflight,
        "workers": args.workers,
        "total_inflight": total_inflight,
        "latency_ms": args.latency_ms,
        "database": "sqlite" if not args.database_url else args.database_url.split(":", 1)[0],
        "broker": "redis" if args.redis else "orm",
        "succeeded": counts.get(Status.SUCCEEDED, 0),
        "dead": counts.get(Status.DEAD, 0),
        "submit_s": round(submitted_s, 3),
        "first_bulk_s": round(answered[0] - m0, 3),
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(jobs_per_s, 1),
        "ideal_per_s": round(total_inflight * 1000 / args.latency_ms, 1),
        "ceiling_client": roof["client"],
        "ceiling_calls_per_s": round(roof["calls_per_s"], 1),
        "ceiling_cpu_ms_per_call": round(roof["cpu_ms_per_call"], 3),
        "ceiling_standin_cpu_ms_per_call": round(roof["server_cpu_ms_per_call"], 3),
        "ratio": round(jobs_per_s / roof["calls_per_s"], 3),
        "worker_cpu_ms_per_job": round(cpu_s * 1000 / args.jobs, 3),
        "worker_cpu_by_process": tree.by_process()[:6],
        **shape,
        "cores_used": cores,
        "idle_submit_to_call_ms": _stats(latency["idle"]) | {"n": len(latency["idle"])},
        "warm_submit_to_call_ms": _stats(latency["warm"]) | {"n": len(latency["warm"])},
    }


def _latency(stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return "not measured"
    return f"median {stats['median']} ms, max {stats['max']} ms (n={stats['n']})"


def print_summary(r: dict[str, Any]) -> None:
    rows = [
        ("code", r["code"] or "not a git checkout"),
        ("jobs", f"{r['jobs']} ({r['succeeded']} succeeded, {r['dead']} dead)"),
        ("in-flight", f"{r['inflight']} per worker, {r['total_inflight']} total"),
        ("workers", r["workers"]),
        ("elapsed", f"{r['elapsed_s']:.2f} s (submission took {r['submit_s']:.2f} s)"),
        ("jobs/s", f"{r['jobs_per_s']:.0f}"),
        (
            "ceiling calls/s",
            f"{r['ceiling_calls_per_s']:.0f} (ideal {r['ideal_per_s']:.0f}; "
            f"{r['ceiling_client']}, {r['ceiling_cpu_ms_per_call']:.2f} ms CPU a call)",
        ),
        ("ratio", f"{r['ratio']:.2f}"),
        ("worker CPU ms/job", f"{r['worker_cpu_ms_per_job']:.2f}"),
        ("idle submit->call", _latency(r["idle_submit_to_call_ms"])),
        ("warm submit->call", _latency(r["warm_submit_to_call_ms"])),
        (
            "run shape",
            f"first bulk answered at {r['first_bulk_s']:.2f} s, "
            f"first claim at {r['first_claim_s']:.2f} s, {r['claims']} claims "
            f"({r['jobs_per_claim']} jobs each), {r['writes']} writes "
            f"({r['results_per_write']} results each), upstream busy {r['upstream_busy']:.0%}; "
            f"{r['during_submit_per_s']:.0f} jobs/s while submitting, "
            f"{r['after_submit_per_s']:.0f} after",
        ),
        (
            "cores used",
            "workers {workers}, stand-in {standin}, this process {bench}, "
            "other processes {others}; machine {machine} of {ncpu}".format(
                **r["cores_used"], ncpu=os.cpu_count()
            ),
        ),
    ]
    for name, value in rows:
        print(f"{name:<19} {value}")
    print("RESULT " + json.dumps(r))


#: what ``--repeat`` sums up: the run's figures that vary from run to run
REPEATED = (
    "jobs_per_s",
    "ceiling_calls_per_s",
    "ratio",
    "worker_cpu_ms_per_job",
    "first_bulk_s",
    "first_claim_s",
    "during_submit_per_s",
    "after_submit_per_s",
)


def repeat(times: int) -> None:
    """Run this script ``times`` times with the same options, one process each (a fresh
    database, stand-in and cluster each time), then print the median and range of each
    figure: on a shared 2-core machine one run's ratio moves by several points."""
    argv = sys.argv[1:]
    if "--repeat" in argv:  # "--repeat N"
        i = argv.index("--repeat")
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--repeat=")]
    results = []
    for n in range(times):
        out = subprocess.run(
            [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
        r = results[-1]
        print(
            f"run {n + 1}: {r['jobs_per_s']:.0f} jobs/s, ratio {r['ratio']:.2f}, "
            f"{r['worker_cpu_ms_per_job']:.2f} ms CPU/job, "
            f"first bulk {r['first_bulk_s']:.2f} s, first claim {r['first_claim_s']:.2f} s"
        )
    summary = {
        key: {
            "median": statistics.median(r[key] for r in results),
            "min": min(r[key] for r in results),
            "max": max(r[key] for r in results),
        }
        for key in REPEATED
    }
    for key, s in summary.items():
        print(f"{key:<24} median {s['median']:g} (min {s['min']:g}, max {s['max']:g})")
    print("SUMMARY " + json.dumps({"runs": times, "code": code_version(), **summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=64, help="calls in flight per drain")
    parser.add_argument("--workers", type=int, default=1, help="drains (worker processes)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="stand-in latency")
    parser.add_argument(
        "--endpoint-concurrency",
        type=int,
        default=10000,
        help="the endpoint's max_concurrency (64: the default drains per host meet a common cap)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for all jobs")
    parser.add_argument("--idle-samples", type=int, default=10)
    parser.add_argument("--ceiling-calls", type=int, default=0, help="default: --jobs")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--redis", default="", metavar="REDIS_URL", help="use the Redis broker")
    parser.add_argument(
        "--profile", default="", metavar="FILE", help="py-spy raw stacks of the cluster, timed part"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs, each in a fresh process; prints the median"
    )
    args = parser.parse_args()
    if args.latency_ms <= 0:
        parser.error("--latency-ms must be positive: the ideal rate is in-flight / latency")
    if args.repeat > 1:
        repeat(args.repeat)
        return
    tmp = Path(tempfile.mkdtemp(prefix="llmqueue-bench-"))
    try:
        print_summary(run(args, tmp))
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
