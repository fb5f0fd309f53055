"""Serve this host's llmqueue event metrics to Prometheus, on a host that runs no web server.

    manage.py llmqueue_metrics --host 0.0.0.0 --port 9108

A worker-only host (``manage.py qcluster`` and nothing else) counts its drains' events in its
own ``PROMETHEUS_MULTIPROC_DIR``; this serves them. The database state (queue depth, endpoints)
is left to the web hosts' ``/metrics``, so that it is not reported once per host.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import start_http_server

from llmqueue import metrics


class Command(BaseCommand):
    help = "Serve this host's llmqueue event counters for Prometheus (worker-only hosts)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9108)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        if metrics.multiprocess_dir() is None:
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not set: there is nothing to serve")
        server, thread = start_http_server(port, addr=host, registry=metrics.events_registry())
        self.stdout.write(f"llmqueue metrics on http://{host}:{port}/metrics (Ctrl-C stops)")
        try:
            while thread.is_alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
