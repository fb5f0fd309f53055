"""Run by test_bucket_race: 25 threads of one process each try to take a token at once.

    python -m tests.integration.bucket_race START_EPOCH THREADS

Prints how many takes succeeded.
"""

import os
import sys
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from django.db import connections  # noqa: E402

from llmqueue.limits.ledger import bucket_try  # noqa: E402
from llmqueue.policies.buckets import Bucket  # noqa: E402


def main() -> None:
    start, threads = float(sys.argv[1]), int(sys.argv[2])
    won: list[bool] = []

    def take() -> None:
        while time.time() < start:
            time.sleep(0.0005)
        ok, _, _ = bucket_try(scope="race", key="", spec=Bucket(5, 0), cost=1)
        won.append(ok)
        connections.close_all()

    workers = [threading.Thread(target=take) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(sum(won))


if __name__ == "__main__":
    main()
