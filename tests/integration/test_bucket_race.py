"""100 concurrent takers (25 threads in each of 4 processes), a bucket of 5, no refill."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llmqueue.models import TokenBucket
from tests.fixtures import ROOT, database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_exactly_five_of_a_hundred_takers_win():
    start = time.time() + 6
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bucket_race", str(start), "25"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    won = [int(out.strip()) for out, _ in outputs]
    assert sum(won) == 5, won
    bucket = TokenBucket.objects.get(scope="race")
    assert bucket.tokens == pytest.approx(0) and bucket.version == 5
