"""Whether a qcluster runs anywhere in the fleet: the readiness probe's question, and the
``llmqueue_cluster_heartbeat_age_seconds`` gauge that an alert watches.

Read from the database, so every web host gives the same answer; the gauge is collected at
scrape time (registered by ``llmqueue.apps``), never counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone
from django_q.models import Schedule
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmqueue.models import DrainSlot
from llmqueue.worker.tasks import HOUSEKEEPING_TASK


def cluster_heartbeat() -> datetime | None:
    """When a qcluster of the fleet last showed it runs; None if none ever did.

    Two signs, the later wins: a slot heartbeat (drains and the health checker beat every few
    seconds while they run), and the housekeeping schedule, which the cluster's scheduler
    moves on every minute even when the queue is idle. A schedule that never ran (no task)
    says nothing; one that ran is as fresh as its next run time minus its minute.
    """
    beats = []
    slot = DrainSlot.objects.aggregate(t=Max("heartbeat_at"))["t"]
    if slot is not None:
        beats.append(slot)
    task, next_run = (
        Schedule.objects.filter(func=HOUSEKEEPING_TASK).values_list("task", "next_run").first()
    ) or (None, None)
    if task and next_run is not None:
        beats.append(next_run - timedelta(minutes=1))
    return max(beats, default=None)


class HeartbeatCollector(Collector):
    """The age of the freshest cluster heartbeat, read on each scrape; +Inf when no qcluster
    ever ran (an alert must see "never" as the oldest age there is, not as no series)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        beat = cluster_heartbeat()
        age = math.inf if beat is None else max(0.0, (timezone.now() - beat).total_seconds())
        yield GaugeMetricFamily(
            "llmqueue_cluster_heartbeat_age_seconds",
            "Seconds since a qcluster of the fleet last beat (drain or health-checker slot, "
            "or the housekeeping schedule); +Inf if none ever ran.",
            age,
        )
