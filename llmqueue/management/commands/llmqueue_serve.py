"""Run the web server and the django-q2 cluster together in the foreground (one machine).

    manage.py llmqueue_serve --port 8000

Ctrl-C (or SIGTERM) stops both; if either exits, the other is stopped too. For a fleet, run
the web server (gunicorn project.wsgi) and `manage.py qcluster` as separate services instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run the web server and the qcluster workers in the foreground; Ctrl-C stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        if not 1 <= port <= 65535:
            raise CommandError(f"--port: {port} is not a TCP port")
        manage = [sys.executable, sys.argv[0]]
        # Each child leads its own process group, so that a stop reaches every process in it
        # (the qcluster's workers included) and each child is stopped the way it expects.
        children = [
            subprocess.Popen(
                [*manage, "runserver", "--noreload", f"{host}:{port}"], start_new_session=True
            ),
            subprocess.Popen([*manage, "qcluster"], start_new_session=True),
        ]
        self.stdout.write(
            self.style.SUCCESS(f"llmqueue on http://{host}:{port}/  (Ctrl-C stops it)")
        )
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(c.poll() is None for c in children):
                time.sleep(0.2)
        finally:
            for c in children:
                if c.poll() is None:
                    os.killpg(c.pid, signal.SIGINT)  # as Ctrl-C: each child's clean stop
            deadline = time.monotonic() + 30
            for c in children:
                try:
                    c.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(c.pid, signal.SIGKILL)
                    c.wait()
        failed = [
            c for c in children if c.returncode not in (0, -signal.SIGINT, -signal.SIGTERM, None)
        ]
        if failed and not stopping:
            raise CommandError("a child process exited unexpectedly; see its output above")
