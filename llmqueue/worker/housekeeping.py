"""The housekeeping schedule's task (every minute, ``HOUSEKEEPING_TASK``): the net under the
drains, and the chores no drain owns."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from llmqueue.jobs import jobs_expire, jobs_reap, queue_next_due
from llmqueue.jobs.batches import batches_settle
from llmqueue.jobs.retention import jobs_purge
from llmqueue.worker.health import health_wake
from llmqueue.worker.slots import slots_live, slots_reap_dead
from llmqueue.worker.tasks import drain_enqueue


def housekeeping() -> dict[str, int]:
    """Every minute: requeue jobs whose worker died, expire those past their deadline, settle
    batches whose jobs all ended, start a drain if work waits unseen, make sure the health
    checker runs, and delete jobs past their retention (a bounded share of the minute:
    ``llmqueue.jobs.retention``)."""
    health_wake()
    reaped = slots_reap_dead() + jobs_reap()
    expired = jobs_expire()
    settled = batches_settle()
    due = queue_next_due()
    woke = 0
    if due is not None and due <= timezone.now() + timedelta(seconds=60) and slots_live() == 0:
        drain_enqueue()
        woke = 1
    purged = jobs_purge()
    return {
        "reaped": reaped,
        "expired": expired,
        "settled": settled,
        "woke": woke,
        "purged": sum(purged.values()),
    }
