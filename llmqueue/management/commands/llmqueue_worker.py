"""Run this host's workers (the django-q2 cluster) for a process manager:

    manage.py llmqueue_worker

SIGTERM (to this process or to its whole process group) and SIGINT stop it the same clean
way: drains stop claiming, calls in flight get LLMQUEUE_STOP_GRACE_S, the rest go back to the
queue with their attempt refunded, and every process of the cluster has exited within
STOP_GRACE_S + 5 s (llmqueue.worker.supervise). Give the process manager a stop timeout of at
least STOP_GRACE_S + 10 s. Use it instead of `manage.py qcluster`, which waits for running
drains (minutes) when stopped.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from llmqueue.worker.supervise import cluster_run


class Command(BaseCommand):
    help = "Run the qcluster workers; SIGTERM or SIGINT stops them within STOP_GRACE_S + 5 s."

    def handle(self, *args: Any, **options: Any) -> None:
        if not cluster_run():
            raise CommandError("the cluster's sentinel died; its workers were stopped")
