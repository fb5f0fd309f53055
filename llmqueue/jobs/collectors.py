"""The queue's and the endpoints' state, read from the database on each scrape of /metrics.

Events are counted where they happen (``llmqueue.metrics``); state is read here, at scrape
time, so that it is the same fleet-wide truth whichever process answers. Each read is one
small query on a partial index or the endpoint rows; nothing counts the job history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmqueue.db.rows import db_param, rows_read
from llmqueue.endpoints.pools import endpoint_in_flight
from llmqueue.jobs.due import queue_due_count
from llmqueue.jobs.totals import status_count
from llmqueue.models import Endpoint, Job, Status, status_literals


class QueueStateCollector(Collector):
    """Gauges read from the database on each scrape (see the module docstring)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        depth = GaugeMetricFamily(
            "llmqueue_queue_depth",
            "Jobs waiting or running now, and dead letters waiting for an operator.",
            labels=["status"],
        )
        # Only the queue's statuses: the history is counted by llmqueue_jobs_finished_total
        # instead. A COUNT each, from its own partial index (job_next_due, job_running,
        # job_dead), whatever the history holds.
        for status in (Status.QUEUED, Status.RUNNING, Status.DEAD):
            depth.add_metric([status], status_count(status))
        yield depth
        oldest = queue_oldest_due(now)
        yield GaugeMetricFamily(
            "llmqueue_queue_due",
            "Queued jobs whose time has come (not backing off).",
            queue_due_count(now),
        )
        yield GaugeMetricFamily(
            "llmqueue_queue_oldest_due_seconds",
            "How long the oldest due job has been claimable without being claimed.",
            (now - oldest).total_seconds() if oldest else 0.0,
        )
        yield from _endpoint_families(list(Endpoint.objects.all()), endpoint_in_flight())


def queue_oldest_due(now: Any) -> Any:
    """When the longest-waiting due job became due (None: none is), from job_next_due (the
    status a literal, so that SQLite uses that partial index)."""
    sql = (
        f"SELECT MIN({{columns}}) FROM {{table}} "
        f"WHERE status = {status_literals([Status.QUEUED])} AND available_at <= %s"
    )
    ((oldest,),) = rows_read(Job, ("available_at",), sql, [db_param(Job, "available_at", now)])
    return oldest


def _endpoint_families(endpoints: list[Any], in_flight: dict[int, int]) -> Iterator[Any]:
    labels = ["endpoint"]
    enabled = GaugeMetricFamily("llmqueue_endpoint_enabled", "1 if enabled.", labels=labels)
    healthy = GaugeMetricFamily(
        "llmqueue_endpoint_healthy", "1 if its health checks pass.", labels=labels
    )
    breaker = GaugeMetricFamily(
        "llmqueue_endpoint_breaker_state",
        "1 for the circuit breaker's current state (closed, open, half_open).",
        labels=["endpoint", "state"],
    )
    flight = GaugeMetricFamily(
        "llmqueue_endpoint_in_flight", "Calls in flight under a live lease.", labels=labels
    )
    room = GaugeMetricFamily(
        "llmqueue_endpoint_max_concurrency", "The endpoint's max_concurrency.", labels=labels
    )
    latency = GaugeMetricFamily(
        "llmqueue_endpoint_latency_seconds",
        "The balancer's latency average of the endpoint (peak EWMA).",
        labels=labels,
    )
    for e in endpoints:
        enabled.add_metric([e.name], float(e.enabled))
        healthy.add_metric([e.name], float(e.healthy))
        for state in ("closed", "open", "half_open"):
            breaker.add_metric([e.name, state], float(e.breaker_state == state))
        flight.add_metric([e.name], in_flight.get(e.id, 0))
        room.add_metric([e.name], e.max_concurrency)
        if e.latency_ms is not None:
            latency.add_metric([e.name], e.latency_ms / 1000.0)
    yield from (enabled, healthy, breaker, flight, room, latency)
