"""Run the web server and the django-q2 cluster together in the foreground (one machine).

    manage.py llmqueue_serve --port 8000

Ctrl-C (or SIGTERM) stops both; if either exits, the other is stopped too. For a fleet, run
the web server (uvicorn project.asgi:application, README) and `manage.py llmqueue_worker`
as separate services instead (deploy/).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmqueue import metrics


class Command(BaseCommand):
    help = "Run the web server and the qcluster workers in the foreground; Ctrl-C stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        if not 1 <= port <= 65535:
            raise CommandError(f"--port: {port} is not a TCP port")
        manage = [sys.executable, sys.argv[0]]
        # This host's services start here: the deployment's multiprocess directory (one per
        # database, project/prometheus_dir.py) starts empty, so the counts start at zero.
        metrics.multiprocess_dir_reset()
        # Each child leads its own process group, so that a stop reaches every process in it
        # (the cluster's workers included), each by the signal that stops it cleanly: SIGINT
        # for the cluster (see llmqueue.worker.drain), SIGTERM for the web server (a shell may have
        # started us with SIGINT ignored, and children inherit that).
        # uvicorn, as in production (README): an ASGI server, so that requests waiting for
        # their jobs (/v1, ?wait=) hold no thread (llmqueue.jobs.waiting).
        # On a stop, waiting requests are cut off after 10 s (their jobs go on).
        uvicorn = ["-m", "uvicorn", "project.asgi:application", "--no-access-log"]
        listen = ["--host", host, "--port", str(port), "--timeout-graceful-shutdown", "10"]
        web = subprocess.Popen([sys.executable, *uvicorn, *listen], start_new_session=True)
        workers = subprocess.Popen([*manage, "llmqueue_worker"], start_new_session=True)
        children = [(web, signal.SIGTERM), (workers, signal.SIGINT)]
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
            while not stopping and web.poll() is None and workers.poll() is None:
                time.sleep(0.2)
        finally:
            for child, stop_signal in children:
                if child.poll() is None:
                    os.killpg(child.pid, stop_signal)
            deadline = time.monotonic() + 30
            for child, _ in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        if not stopping:
            raise CommandError("a child process exited unexpectedly; see its output above")
