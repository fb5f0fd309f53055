"""The worker: a drain claims due jobs and keeps many upstream calls in flight on one loop.

A drain is a django-q2 task (``drain``) that holds one of its host's drain slots while it runs.
It never waits for a batch: each time calls finish, one short transaction writes their
outcomes and claims as many new jobs as there are free places, so every place stays busy.

Who starts drains:
- a submission, once it commits (``drain_wake``), when no live drain would see the job;
- a drain that fills all its places, every few seconds, so that other workers (on this host
  or another) join in while a backlog lasts; the extra ones find no slot and end at once;
- a drain that reaches its maximum life with work left hands over to a fresh task;
- every worker process as it starts (after a crash, the cluster picks the queue up again);
- the housekeeping schedule, every minute, as the net under all of the above.

Nothing here is needed for safety: a job's claim is a lease in the Job table, and a job whose
lease expired goes back to the queue (``jobs_reap``). Drains only make the queue move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from llmqueue.conf import conf
from llmqueue.dispatch import endpoints_learn
from llmqueue.jobs import (
    AttemptResult,
    Claim,
    jobs_claim,
    jobs_reap,
    jobs_record,
    jobs_release,
    jobs_renew,
    queue_next_due,
)
from llmqueue.models import DrainSlot, Outcome
from llmqueue.ratelimit import buckets_learn
from llmqueue.slots import (
    slot_acquire,
    slot_beat,
    slot_owner,
    slot_release,
    slots_live,
    stop_on_signals,
)
from llmqueue.upstream import Upstream

log = logging.getLogger(__name__)

DRAIN_TASK = "llmqueue.drain.drain"


def _enqueue_drain() -> None:
    from django_q.tasks import async_task

    async_task(DRAIN_TASK, task_name=f"drain-{secrets.token_hex(4)}", q_options={"save": False})


def drain_wake() -> None:
    """Start a drain unless a live one will see the queue anyway. Cheap: one small query."""
    try:
        if slots_live() == 0:
            _enqueue_drain()
    except Exception:  # a wake is a hint; the housekeeping schedule is the net under it
        log.exception("could not wake a drain")


def housekeeping() -> dict[str, int]:
    """Every minute: requeue jobs whose worker died, start a drain if work waits unseen, and
    make sure the health checker runs."""
    from llmqueue.health import health_wake

    health_wake()
    reaped = jobs_reap()
    due = queue_next_due()
    woke = 0
    if due is not None and due <= timezone.now() + timedelta(seconds=60) and slots_live() == 0:
        _enqueue_drain()
        woke = 1
    return {"reaped": reaped, "woke": woke}


# --- the drain ----------------------------------------------------------------------------------


def drain() -> str:
    """django-q2 entry point: run a drain on this worker if a slot is free."""
    owner = slot_owner()
    close_old_connections()
    slot = slot_acquire(host=socket.gethostname(), count=conf.DRAINS_PER_HOST, owner=owner)
    if slot is None:
        return "no free slot"
    drainer = Drainer(slot=slot)
    try:
        with stop_on_signals(drainer.stop_threadsafe):
            handled = asyncio.run(drainer.run())
    finally:
        connections.close_all()
    return f"handled {handled} calls"


def _db(fn: Any) -> Any:
    # All ORM work runs on one thread (thread_sensitive), in short functions with their own
    # transaction; the event loop never blocks on the database.
    return sync_to_async(fn, thread_sensitive=True)


class Drainer:
    def __init__(self, *, slot: DrainSlot) -> None:
        self.slot = slot
        self.concurrency = max(1, int(conf.DRAIN_CONCURRENCY))
        self.inflight: dict[asyncio.Task[AttemptResult], Claim] = {}
        self.finished: list[AttemptResult] = []
        self.wakeup = asyncio.Event()
        self.handled = 0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def stop_threadsafe(self, signum: int) -> None:
        """Stop claiming; let calls in flight finish for STOP_GRACE_S, then requeue the rest."""
        self.stopping = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.wakeup.set)

    # -- database steps (run in the DB thread) --

    def _step(self, results: list[AttemptResult], free: int) -> list[Claim]:
        with transaction.atomic():
            jobs_record(results)
            endpoints_learn(results)
            buckets_learn(results)
            return jobs_claim(limit=free)

    def _beat(self, tokens: list[str]) -> bool:
        """Renew the slot and our leases; False if the slot was taken from us."""
        kept = slot_beat(self.slot)
        jobs_renew(tokens=tokens)
        jobs_reap()
        return kept

    def _leave(self, *, hand_over: bool) -> None:
        slot_release(self.slot)
        # Released first, then looked: a submission that saw this drain live committed before
        # the release, so its job is visible here; one that committed later saw no live drain
        # and woke one itself. No job falls between the two.
        due = queue_next_due()
        if due is not None and (hand_over or due <= timezone.now()):
            _enqueue_drain()

    # -- the loop --

    async def _call(self, upstream: Upstream, claim: Claim) -> AttemptResult:
        try:
            async with asyncio.timeout(claim.target.timeout_s + 5):
                return await upstream.call(claim)
        except Exception as exc:  # a bug here must cost an attempt, never the job
            log.exception("call for job %s failed inside the worker", claim.job_id)
            return AttemptResult(
                claim=claim,
                started_at=timezone.now(),
                duration_ms=0.0,
                outcome=Outcome.RETRY,
                error=f"worker error: {type(exc).__name__}: {exc}"[:2000],
            )

    def _done(self, task: asyncio.Task[AttemptResult]) -> None:
        self.inflight.pop(task, None)
        if task.cancelled():  # the loop is shutting down; the lease will lapse and requeue it
            return
        self.finished.append(task.result())
        self.wakeup.set()

    async def run(self) -> int:
        upstream = Upstream(max_connections=self.concurrency)
        loop = self.loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + conf.DRAIN_MAX_SECONDS
        last_busy = start
        next_beat = start + conf.HEARTBEAT_S
        next_spread = start
        try:
            while True:
                if self.stopping:
                    break
                now = loop.time()
                closing = now >= deadline
                free = 0 if closing else self.concurrency - len(self.inflight)
                results, self.finished = self.finished, []
                claims: list[Claim] = []
                if results or free > 0:
                    try:
                        claims = await _db(self._step)(results, free)
                    except Exception:
                        log.exception(
                            "drain step failed; keeping %d results for the next", len(results)
                        )
                        self.finished[:0] = results
                        await asyncio.sleep(1.0)
                        continue
                    self.handled += len(results)
                for claim in claims:
                    task = loop.create_task(self._call(upstream, claim))
                    self.inflight[task] = claim
                    task.add_done_callback(self._done)
                if claims or self.inflight:
                    last_busy = now
                if now >= next_beat:
                    tokens = [c.token for c in self.inflight.values()]
                    if not await _db(self._beat)(tokens):
                        log.warning(
                            "drain %s lost its slot; stopping after in-flight calls",
                            self.slot.owner,
                        )
                        deadline = now
                    next_beat = now + conf.HEARTBEAT_S
                if free and len(claims) == free and now >= next_spread:
                    # Full: there is likely more due work than this drain can hold.
                    await _db(_enqueue_drain)()
                    next_spread = now + 2.0
                if not self.inflight and not claims:
                    if closing:
                        break
                    if now - last_busy >= conf.DRAIN_LINGER_S:
                        due = await _db(queue_next_due)()
                        if due is None:
                            break
                if len(claims) == free and free:
                    continue  # there may be more: claim again at once
                idle = not self.inflight and now - last_busy >= conf.DRAIN_LINGER_S
                timeout = max(conf.DRAIN_POLL_S, 1.0) if idle else conf.DRAIN_POLL_S
                if not self.finished:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), timeout)
                self.wakeup.clear()
        finally:
            if self.inflight:
                await asyncio.wait(list(self.inflight), timeout=conf.STOP_GRACE_S)
            cut_off = list(self.inflight.values())
            for task in list(self.inflight):
                task.cancel()
            if cut_off:
                await _db(jobs_release)(claims=cut_off)
            if self.finished:
                results, self.finished = self.finished, []
                await _db(self._step)(results, 0)
                self.handled += len(results)
            await upstream.aclose()
            await _db(self._leave)(hand_over=not self.stopping and loop.time() >= deadline)
            await _db(connections.close_all)()
        return self.handled
