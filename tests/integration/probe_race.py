"""Run by test_breaker_race: one of several processes racing for an open breaker's probes.

    python -m tests.integration.probe_race START_EPOCH MODE

MODE "claim": the real path, a claim in its own transaction. MODE "cas": only the breaker's
compare-and-set, with no row lock, to show the guarded update alone lets K through.
Prints how many probes (claimed jobs) this process won.
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from llmqueue.endpoints.pools import breaker_of, breaker_save, breaker_settings  # noqa: E402
from llmqueue.models import Endpoint  # noqa: E402
from llmqueue.policies.breaker import breaker_allow  # noqa: E402
from llmqueue.worker.scheduler import jobs_claim  # noqa: E402


def main() -> None:
    start, mode = float(sys.argv[1]), sys.argv[2]
    while time.time() < start:
        time.sleep(0.0005)
    if mode == "claim":
        with transaction.atomic():
            print(len(jobs_claim(limit=5)))
        return
    won = 0
    settings = breaker_settings()
    for _ in range(20):  # keep trying, as a busy drain would
        state = breaker_of(Endpoint.objects.get())
        allowed, new = breaker_allow(state, time.time(), settings)
        if allowed and new is not state and breaker_save(Endpoint.objects.get().pk, state, new):
            won += 1
    print(won)


if __name__ == "__main__":
    main()
