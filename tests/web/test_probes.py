"""/readyz and /metrics against real processes: a WSGI server with no database, a qcluster."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from llmqueue import metrics as llm_metrics
from llmqueue.jobs import job_submit, jobs_submit_many
from llmqueue.models import DrainSlot, Job, Status
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import ROOT, free_port, wait_until

#: a WSGI server on the project (runserver refuses to start without its database)
WSGI_SERVER = (
    "import sys; from wsgiref.simple_server import make_server; "
    "from project.wsgi import application; "
    "make_server('127.0.0.1', int(sys.argv[1]), application).serve_forever()"
)


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page; raises if the page does not parse."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(page: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in page.items() if n == name and want <= set(lab))


def scrape(client: Any) -> dict[Any, float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/plain")
    return samples(r.content.decode())


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    port = free_port()
    closed = free_port()  # nothing listens there: "connection refused"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://llmqueue@127.0.0.1:{closed}/llmqueue",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    with open(tmp_path / "web.log", "wb") as log:
        web = subprocess.Popen(
            [sys.executable, "-c", WSGI_SERVER, str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: _answers(f"http://127.0.0.1:{port}/healthz"),
                timeout=30,
                what="the WSGI server",
            )
            status, body = get(f"http://127.0.0.1:{port}/readyz")
            assert status == 503
            assert body == {"status": "unavailable", "reason": "database: OperationalError"}
            assert get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        finally:
            web.terminate()
            web.wait(10)


def _answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True


@pytest.mark.django_db
def test_readyz_is_503_without_a_cluster_heartbeat(client, settings):
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "cluster: no qcluster has ever run"
    slot = DrainSlot.objects.create(host="h", number=0, owner="1-h-x", heartbeat_at=timezone.now())
    assert client.get("/readyz").status_code == 200
    DrainSlot.objects.filter(pk=slot.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=200)
    )
    r = client.get("/readyz")
    assert r.status_code == 503 and "limit 150s" in r.json()["reason"]
    settings.LLMQUEUE = {"READY_HEARTBEAT_S": 300}  # the freshness is a setting
    assert client.get("/readyz").status_code == 200


@pytest.mark.integration
def test_readyz_follows_a_real_cluster(cluster, client, settings):
    assert client.get("/readyz").status_code == 503  # no cluster yet
    c = cluster()
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="ready")
    c.kill()  # the whole cluster dies at once: nothing beats any more
    settings.LLMQUEUE = {"READY_HEARTBEAT_S": 1}
    wait_until(lambda: client.get("/readyz").status_code == 503, timeout=30, what="not ready")
    assert client.get("/readyz").json()["reason"].startswith("cluster: last heartbeat")


@pytest.mark.django_db
def test_metrics_page_has_state_from_the_database(client):
    owner = make_user()
    ep = make_endpoint(name="gpu-1", max_concurrency=8)
    job_submit(owner=owner, spec=chat_spec())
    dead = job_submit(owner=owner, spec=chat_spec())[0]
    Job.objects.filter(pk=dead.pk).update(status=Status.DEAD)
    page = scrape(client)
    assert page[("llmqueue_queue_depth", (("status", "queued"),))] == 1
    assert page[("llmqueue_queue_depth", (("status", "dead"),))] == 1
    assert page[("llmqueue_queue_due", ())] == 1
    assert page[("llmqueue_endpoint_healthy", (("endpoint", "gpu-1"),))] == 1
    assert page[("llmqueue_endpoint_max_concurrency", (("endpoint", "gpu-1"),))] == 8
    breaker = {lab: v for (n, lab), v in page.items() if n == "llmqueue_endpoint_breaker_state"}
    assert breaker[(("endpoint", ep.name), ("state", "closed"))] == 1
    assert breaker[(("endpoint", ep.name), ("state", "open"))] == 0
    assert total(page, "django_http_requests_total_by_method_total") >= 0  # django-prometheus


def _counts_by_pid(metric: str) -> Counter[str]:
    """Per worker process: the value of ``metric`` in its own multiprocess file."""
    by_pid: Counter[str] = Counter()
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "counter_*.db")):
        pid = os.path.basename(path)[len("counter_") : -len(".db")]
        for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
            if json.loads(key)[1] == metric:
                by_pid[pid] += value
    return by_pid


@pytest.mark.integration
def test_500_jobs_on_two_workers_add_up_in_metrics(cluster, standin, client):
    owner = make_user()
    ep = make_endpoint(base_url=standin.base_url, max_concurrency=100)
    standin.control(latency_ms=20)
    finished = "llmqueue_jobs_finished_total"
    before = scrape(client)
    pids_before = _counts_by_pid(finished)
    jobs_submit_many(owner=owner, specs=[chat_spec(f"m {i}") for i in range(500)])
    # Small drains, so that one fills up at once and calls the other worker in.
    cluster(LLMQUEUE_DRAINS_PER_HOST="2", LLMQUEUE_DRAIN_CONCURRENCY="16")
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() == 500,
        timeout=120,
        what="500 jobs",
    )
    # Counters move once the drain's transaction commits, a moment after the rows do.
    wait_until(
        lambda: total(scrape(client), finished) - total(before, finished) == 500,
        timeout=10,
        what="the finished counter",
    )
    after = scrape(client)
    delta = {
        name: total(after, name, **labels) - total(before, name, **labels)
        for name, labels in [
            (finished, {"outcome": "succeeded"}),
            ("llmqueue_jobs_submitted_total", {"kind": "chat"}),
            ("llmqueue_attempts_total", {"endpoint": ep.name, "outcome": "success"}),
            ("llmqueue_upstream_seconds_count", {"endpoint": ep.name}),
            ("llmqueue_queue_wait_seconds_count", {}),
        ]
    }
    assert set(delta.values()) == {500}, delta
    # The total is the sum over the processes that did the work: more than one worker did.
    worked = {
        pid: n - pids_before.get(pid, 0)
        for pid, n in _counts_by_pid(finished).items()
        if n > pids_before.get(pid, 0)
    }
    assert len(worked) >= 2 and sum(worked.values()) == 500, worked
    assert os.getpid() not in {int(p) for p in worked}  # none of it was counted in this process
    assert after[("llmqueue_queue_depth", (("status", "queued"),))] == 0


def test_a_worker_only_host_serves_its_counters(tmp_path):
    """`manage.py llmqueue_metrics`: the events of this host's processes, without DB state."""
    llm_metrics.JOBS_FINISHED.labels("cancelled").inc(0)  # this process has a counter file
    port = free_port()
    with open(tmp_path / "metrics.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "llmqueue_metrics", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def page() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
                        return r.read().decode()
                except OSError:
                    return None

            text = wait_until(page, timeout=30, what="the metrics server")
        finally:
            server.terminate()
            server.wait(10)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "llmqueue_jobs_finished" in families  # read from this test process's file
    assert "llmqueue_queue_depth" not in families  # state is the web hosts' to report


def _heartbeat_age(client: Any) -> float:
    text = client.get("/metrics").content.decode()
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "llmqueue_cluster_heartbeat_age_seconds"
    ]
    return family.samples[0].value


@pytest.mark.django_db
def test_metrics_report_the_age_of_the_freshest_cluster_heartbeat(client):
    assert _heartbeat_age(client) == float("inf")  # no qcluster ever ran: the oldest age
    old = timezone.now() - timedelta(seconds=600)
    DrainSlot.objects.create(host="a", number=0, owner="1-a-x", heartbeat_at=old)
    assert 600 <= _heartbeat_age(client) < 700
    DrainSlot.objects.create(host="b", number=0, owner="2-b-x", heartbeat_at=timezone.now())
    assert 0 <= _heartbeat_age(client) < 60  # the freshest beat of the fleet counts
