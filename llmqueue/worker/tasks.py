"""The worker's django-q2 tasks by name, and the wake-ups that enqueue them.

A django-q2 task is only a vehicle: the Job table is the truth, and a drain task holds one of
its host's drain slots while it runs (``llmqueue.worker.drain``). Who starts drains:

- a submission, once it commits (``drain_wake``, answering ``jobs.transitions.jobs_due``),
  when no live drain would see its jobs: one drain, or as many as a big submission fills, up
  to the fleet's slots;
- a drain that fills all its places, every few seconds, while the fleet has a free slot
  (``drain_spread``), so that other workers (on this host or another) join in;
- a drain that reaches its maximum life with work left hands over to a fresh task;
- every worker process as it starts, and the housekeeping schedule, every minute, as the net
  under all of the above (``llmqueue.worker.housekeeping``).
"""

from __future__ import annotations

import logging
import secrets

from django.db import connections
from django_q.tasks import async_task

from llmqueue.conf import conf
from llmqueue.worker.slots import slot_hosts, slots_live

log = logging.getLogger(__name__)

DRAIN_TASK = "llmqueue.worker.drain.drain"
HOUSEKEEPING_TASK = "llmqueue.worker.housekeeping.housekeeping"


def drain_enqueue() -> None:
    """Enqueue one drain task (it ends at once if its host has no free slot)."""
    async_task(DRAIN_TASK, task_name=f"drain-{secrets.token_hex(4)}", q_options={"save": False})


def drain_spread() -> None:
    """A full drain asks for help: enqueue another drain while the fleet has a free slot.

    The fleet's slots are DRAINS_PER_HOST on every host known to have drained (see
    ``slots.slot_hosts``); extra drains that find none free end at once, so this is only a
    saving, never a risk.
    """
    try:
        if slots_live() < conf.DRAINS_PER_HOST * max(1, slot_hosts()):
            drain_enqueue()
    except Exception:
        log.exception("could not ask for another drain")
    finally:
        connections.close_all()


def drain_wake(jobs: int = 1) -> None:
    """Start drains unless a live one will see the queue anyway (and spread, if it is full):
    one, or for a big submission as many as its jobs fill, up to the fleet's slots, so that
    they start together rather than one after another. Cheap: one or two small queries."""
    try:
        if slots_live() == 0:
            fills = -(-jobs // max(1, int(conf.DRAIN_CONCURRENCY)))
            if fills > 1:
                fills = min(fills, conf.DRAINS_PER_HOST * max(1, slot_hosts()))
            for _ in range(max(1, fills)):
                drain_enqueue()
    except Exception:  # a wake is a hint; the housekeeping schedule is the net under it
        log.exception("could not wake a drain")
