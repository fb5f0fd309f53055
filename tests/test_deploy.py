"""deploy/: the Prometheus and Grafana files parse, and name only metrics that exist; the
systemd units, the Dockerfile and the compose file run the documented commands and give a
stop its time (nothing here runs a container: deploy/README.md says what was not run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from prometheus_client.metrics import MetricWrapperBase

from llmqueue import metrics
from llmqueue.cache import metrics as cache_metrics
from llmqueue.conf import conf
from tests.factories import make_endpoint
from tests.fixtures import ROOT

DEPLOY = ROOT / "deploy"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


def known_names() -> set[str]:
    names: set[str] = set()
    for module in (metrics, cache_metrics):
        for obj in vars(module).values():
            if isinstance(obj, MetricWrapperBase):
                names.update(obj._name + s for s in SUFFIXES[obj._type])
    names.update(s.name for f in metrics.STATE_REGISTRY.collect() for s in f.samples)
    return names


@pytest.mark.django_db
def test_deploy_files_parse_and_use_real_metric_names():
    make_endpoint(name="e", latency_ms=5.0)  # so that every endpoint family has a sample
    known = known_names()
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert {j["job_name"] for j in prometheus["scrape_configs"]} == {
        "llmqueue-web",
        "llmqueue-workers",
    }
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "llmqueue-alerts.yml").read_text())
    exprs = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "llmqueue-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bllmqueue_[a-z0-9_]+", e)}
    assert used and used <= known, sorted(used - known)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# --- promtool: the configuration and the rules load, and the alerts fire when they should ---

PROMTOOL = shutil.which("promtool")
PROMETHEUS = DEPLOY / "prometheus"


def promtool(*args: str) -> None:
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs it (apt prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    run = subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}\n{run.stderr}"


def test_promtool_accepts_the_scrape_configuration():
    promtool("check", "config", "prometheus.yml")


def test_promtool_accepts_the_alert_rules():
    promtool("check", "rules", "llmqueue-alerts.yml")


def test_every_alert_fires_and_stays_quiet_in_the_rule_unit_tests():
    promtool("test", "rules", "llmqueue-alerts.test.yml")
    alerts = yaml.safe_load((PROMETHEUS / "llmqueue-alerts.yml").read_text())
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((PROMETHEUS / "llmqueue-alerts.test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert names == fired == quiet, (names - fired, names - quiet)


# --- the stop contract: systemd units, Dockerfile, compose file -----------------------------------


def unit_entries(path: Path) -> dict[str, list[str]]:
    """A systemd unit's Key=value lines (keys may repeat), sections ignored."""
    entries: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def test_systemd_units_run_the_documented_commands_and_give_the_stop_its_time():
    grace = conf.STOP_GRACE_S
    web = unit_entries(DEPLOY / "systemd" / "llmqueue-web.service")
    worker = unit_entries(DEPLOY / "systemd" / "llmqueue-worker.service")
    assert worker["ExecStart"] == ["/opt/llmqueue/.venv/bin/python manage.py llmqueue_worker"]
    assert web["ExecStart"][0].startswith(
        "/opt/llmqueue/.venv/bin/uvicorn project.asgi:application "
    )
    for unit in (web, worker):
        assert unit["KillSignal"] == ["SIGTERM"]
        assert unit["KillMode"] == ["control-group"]  # SIGTERM to the whole group
        assert seconds(unit["TimeoutStopSec"][0]) >= grace + 5
        assert "PROMETHEUS_MULTIPROC_DIR=/run/llmqueue/prometheus" in unit["Environment"]
    # the worker's own grace, if the unit sets one, fits in the unit's stop timeout
    for env in worker["Environment"]:
        if env.startswith("LLMQUEUE_STOP_GRACE_S="):
            assert seconds(env.split("=", 1)[1]) + 5 <= seconds(worker["TimeoutStopSec"][0])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_units_verify(tmp_path):
    # The units name /opt/llmqueue; here stand-ins for its programs take its place.
    (tmp_path / "bin").mkdir()
    for name in ("python", "uvicorn"):
        (tmp_path / "bin" / name).symlink_to("/bin/true")
    units = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/llmqueue/.venv/bin/", f"{tmp_path}/bin/")
        units.append(tmp_path / unit.name)
        units[-1].write_text(text.replace("/opt/llmqueue", str(tmp_path)))
    assert len(units) == 2
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_image_stops_on_sigterm_and_runs_the_workers_by_default():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    assert "STOPSIGNAL SIGTERM" in lines
    assert 'CMD ["python", "manage.py", "llmqueue_worker"]' in lines
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_compose_runs_the_documented_commands_and_gives_the_stop_its_time():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {
        "web",
        "workers",
        "worker-metrics",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
    }
    workers, web = services["workers"], services["web"]
    assert workers["command"] == ["python", "manage.py", "llmqueue_worker"]
    assert web["command"][-1].split("exec ")[-1].startswith("uvicorn project.asgi:application ")
    assert services["worker-metrics"]["command"][:3] == ["python", "manage.py", "llmqueue_metrics"]
    grace = seconds(workers["environment"]["LLMQUEUE_STOP_GRACE_S"])
    for service in (web, workers):
        assert service["stop_signal"] == "SIGTERM"
        assert seconds(service["stop_grace_period"]) >= grace + 5
    # every management command the file runs exists
    commands = get_commands()
    for service in services.values():
        command = service.get("command") or []
        words = " ".join(command).replace("&&", " ").split()
        for i, word in enumerate(words[:-1]):
            if word == "manage.py":
                assert words[i + 1] in commands, words[i + 1]
    # every file it mounts is in deploy/
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {
        t for j in prometheus["scrape_configs"] for c in j["static_configs"] for t in c["targets"]
    }
    assert targets == {"web:8000", "worker-metrics:9108"}
