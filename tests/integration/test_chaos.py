"""The chaos soak, short (bench/chaos.py is the long one): two hosts, one killed with SIGKILL
and restarted twice, on the suite's database and broker, whatever they are."""

from __future__ import annotations

import random

import pytest

from bench.chaos import Host, run_phase
from tests.factories import make_endpoint, make_user
from tests.fixtures import CLUSTER_ENV, database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_two_hosts_under_kills_lose_nothing_and_never_stall(standin, tmp_path, settings):
    owner = make_user()
    # Fewer places than the fleet has: a dead host's claims, counted against it, would stall
    # the survivor until given back.
    make_endpoint(base_url=standin.base_url, max_concurrency=24)
    env = {
        **CLUSTER_ENV,
        # real leases: recovery must come from seeing the dead, not from leases lapsing
        "LLMQUEUE_LEASE_S": "30",
        "LLMQUEUE_HEARTBEAT_S": "2",
        "LLMQUEUE_SLOT_STALE_S": "10",
        "LLMQUEUE_DRAINS_PER_HOST": "2",
        "LLMQUEUE_DRAIN_CONCURRENCY": "16",
        "DATABASE_URL": database_url(),
        "Q_CLUSTER_NAME": settings.Q_CLUSTER["name"],
    }
    hosts = [Host(name, env, tmp_path / f"{name}.log") for name in ("host-a", "host-b")]
    rng = random.Random(14)
    try:
        warm = run_phase(
            "warm", hosts, jobs=10, owner=owner, standin_url=standin.url, kill=False, rng=rng
        )
        assert not warm.not_succeeded
        result = run_phase(
            "chaos",
            hosts,
            jobs=1000,
            owner=owner,
            standin_url=standin.url,
            kill=True,
            rng=rng,
            kill_every_s=(1.0, 2.0),
            max_kills=2,
            latency_ms=100,
        )
    finally:
        for h in hosts:
            h.stop()
    assert len(result.kills) == 2, result
    assert result.problems == [], result
    assert result.not_succeeded == 0 and result.missing_prompts == 0
    assert result.repeated <= sum(result.kills)
    assert result.max_stall_s <= 5.0
