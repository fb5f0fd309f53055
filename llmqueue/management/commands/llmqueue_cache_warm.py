"""Pre-fill the response cache from a JSONL file of requests, through the queue.

    manage.py llmqueue_cache_warm requests.jsonl --user alice [--priority 0] [--wait]
        [--timeout 3600]

Each line becomes a job of ``--user`` (answers are that user's, unless their model is in
LLMQUEUE_CACHE_SHARED_MODELS); see ``llmqueue.jobs.warm`` for the line formats. Progress is
printed after each chunk is submitted and, with ``--wait``, every few seconds until every job
has finished. Nothing is submitted when a line is invalid or a model is not served.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmqueue.errors import SubmitError
from llmqueue.jobs.warm import WARM_PRIORITY, WarmReport, cache_warm, warm_specs, warm_status


class Command(BaseCommand):
    help = "Pre-fill the response cache from a JSONL file of requests (submitted as jobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="JSONL: one request per line")
        parser.add_argument("--user", required=True, help="username that owns the jobs")
        parser.add_argument("--priority", type=int, default=WARM_PRIORITY, choices=range(10))
        parser.add_argument("--wait", action="store_true", help="wait until all jobs finish")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds, with --wait")
        parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            owner = get_user_model().objects.get(username=opts["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"--user: no user {opts['user']!r}") from None
        try:
            with opts["file"].open("rb") as f:
                specs = warm_specs(f, priority=opts["priority"])
            report = cache_warm(
                owner=owner,
                specs=specs,
                name=f"cache warm-up: {opts['file'].name}",
                progress=self._submitted,
            )
        except OSError as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc}") from None
        except SubmitError as exc:
            raise CommandError(f"{exc} (nothing was submitted)") from None
        batches = ", ".join(map(str, report.batches)) or "none"
        self.stdout.write(f"submitted {report.submitted} jobs in batches {batches}")
        if opts["wait"] and report.submitted:
            self._wait(report, timeout=opts["timeout"], poll=opts["poll"])

    def _submitted(self, r: WarmReport) -> None:
        self.stdout.write(
            f"submitted {r.submitted}/{r.total}: {r.cached} cached already, "
            f"{r.following} following an identical job, {r.queued} queued"
        )

    def _wait(self, report: WarmReport, *, timeout: float, poll: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            s = warm_status(report.batches)
            self.stdout.write(
                f"done {s['done']}/{s['total']}: {s['succeeded']} succeeded, {s['dead']} dead, "
                f"{s['queued']} queued, {s['running']} running"
            )
            if s["done"] >= s["total"]:
                return
            if time.monotonic() > deadline:
                raise CommandError(f"not finished after {timeout:g} s; the jobs keep running")
            time.sleep(poll)
