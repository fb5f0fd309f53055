"""deploy/: the Prometheus and Grafana files parse, and name only metrics that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from llmqueue import metrics
from llmqueue.cache import metrics as cache_metrics
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
