"""The fleet's one health checker: a django-q2 task that holds the health slot (see
``llmqueue.worker.slots``) and runs ``llmqueue.endpoints.health.endpoints_check`` every
``HEALTH_INTERVAL_S``, handing over to a fresh task every few minutes."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from django.db import close_old_connections, connections
from django_q.tasks import async_task

from llmqueue.conf import conf
from llmqueue.endpoints.health import endpoints_check
from llmqueue.worker.slots import (
    HEALTH_HOST,
    slot_acquire,
    slot_beat,
    slot_owner,
    slot_release,
    slots_live,
    stop_on_signals,
)

log = logging.getLogger(__name__)

HEALTH_TASK = "llmqueue.worker.health.health_loop"
#: a checker hands over to a fresh task after this long (django-q2 timeouts stay sane)
LOOP_SECONDS = 300.0


def health_loop() -> str:
    """django-q2 entry point: the fleet's one checker, for LOOP_SECONDS, then a successor."""
    close_old_connections()
    slot = slot_acquire(host=HEALTH_HOST, count=1, owner=slot_owner())
    if slot is None:
        return "another checker runs"
    deadline = time.monotonic() + LOOP_SECONDS
    rounds = 0
    stop = threading.Event()
    try:
        with stop_on_signals(lambda signum: stop.set()):
            rounds = _check_until(deadline, slot, stop)
    finally:
        slot_release(slot)
        connections.close_all()
    if not stop.is_set():
        _enqueue_checker()
    return f"{rounds} rounds"


def _check_until(deadline: float, slot: Any, stop: threading.Event) -> int:
    rounds = 0
    while time.monotonic() < deadline and not stop.is_set():
        started = time.monotonic()
        try:
            endpoints_check()
            rounds += 1
            if not slot_beat(slot):
                log.warning("the health checker lost its slot; stopping")
                return rounds
        except Exception:  # a bad round must not end the checking
            log.exception("health check round failed")
            close_old_connections()
        stop.wait(max(0.0, conf.HEALTH_INTERVAL_S - (time.monotonic() - started)))
    return rounds


def _enqueue_checker() -> None:
    async_task(HEALTH_TASK, task_name=f"health-{secrets.token_hex(4)}", q_options={"save": False})


def health_wake(**_: Any) -> None:
    """Start the checker unless one runs."""
    try:
        if slots_live(health=True) == 0:
            _enqueue_checker()
    except Exception:
        log.exception("could not start the health checker")
