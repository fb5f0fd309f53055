"""Receivers: the housekeeping schedule exists after migrate; newly due jobs wake drains; a
starting worker makes its TLS context and wakes a drain and the health checker."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django_q.models import Schedule
from django_q.signals import post_spawn

from llmqueue.calls.client import tls_context
from llmqueue.conf import conf
from llmqueue.jobs.transitions import jobs_due
from llmqueue.worker.health import health_wake
from llmqueue.worker.slots import host_name, slots_reap_dead, slots_register
from llmqueue.worker.tasks import HOUSEKEEPING_TASK, drain_wake

log = logging.getLogger(__name__)


@receiver(post_migrate)
def ensure_schedules(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if getattr(app_config, "name", None) != "llmqueue":
        return
    # update_or_create: a database made before the task moved keeps its schedule row, whose
    # func must follow the task's module
    Schedule.objects.update_or_create(
        name="llmqueue housekeeping",
        defaults={"func": HOUSEKEEPING_TASK},
        create_defaults={
            "func": HOUSEKEEPING_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
    )


@receiver(post_spawn)
def wake_on_worker_start(sender: Any, proc_name: str = "", **kwargs: Any) -> None:
    # After a crash or a restart nobody else would start draining until the next schedule.
    # Made now, not by the first call of a drain that has work waiting (~46 ms of CPU).
    tls_context()
    # Known to the fleet from its first moment: full drains elsewhere then ask for help here.
    slots_register(host=host_name(), count=conf.DRAINS_PER_HOST)
    # A restart after a crash: the dead drains' claims go back now, not when leases lapse.
    try:
        slots_reap_dead()
    except Exception:  # the drains look again every second
        log.exception("could not look for dead drains")
    drain_wake()
    health_wake()


@receiver(jobs_due)
def wake_for_due_jobs(sender: Any, jobs: int = 1, **kwargs: Any) -> None:
    drain_wake(jobs=jobs)
