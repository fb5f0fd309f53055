"""8 processes reach an open breaker as its wait ends: exactly K probes go through."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llmqueue.endpoints.pools import breaker_of
from llmqueue.jobs import job_submit
from llmqueue.models import Endpoint
from llmqueue.policies.breaker import Phase
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import ROOT, database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

K = 2


@pytest.mark.parametrize("mode", ["claim", "cas"])
def test_exactly_k_probes_across_8_processes(mode):
    owner = make_user()
    start = time.time() + 8  # time for 8 Python processes to start on 2 cores
    ep = make_endpoint(
        max_concurrency=100,
        breaker_state="open",
        breaker={
            "phase": "open",
            "opened_at": start - 10,
            "open_until": start - 0.001,
            "reopen_count": 0,
        },
        breaker_version=7,
    )
    for i in range(20):
        job_submit(owner=owner, spec=chat_spec(str(i)))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "LLMQUEUE_BREAKER_PROBES": str(K),
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.probe_race", str(start), mode],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert time.time() > start  # they did race after the wait ended
    won = [int(out.strip()) for out, _ in outputs]
    assert sum(won) == K, won
    state = breaker_of(Endpoint.objects.get(pk=ep.pk))
    assert state.phase == Phase.HALF_OPEN and state.probes_granted == K
