"""The worker: a drain claims due jobs and keeps many upstream calls in flight on one loop.

A drain is a django-q2 task (``drain``) that holds one of its host's drain slots while it runs.
It never waits for a batch: each time calls finish, one short transaction writes their
outcomes and claims as many new jobs as there are free places, so every place stays busy.

Who starts drains, and when: ``llmqueue.worker.tasks``.

Nothing here is needed for safety: a job's claim is a lease in the Job table, and a job whose
lease expired goes back to the queue (``jobs_reap``). Drains only make the queue move.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from llmqueue.calls.client import Upstream
from llmqueue.calls.types import CallRequest, CallResult
from llmqueue.conf import conf
from llmqueue.db.locking import writer_turn
from llmqueue.endpoints.pools import endpoints_learn
from llmqueue.jobs import (
    AttemptResult,
    Claim,
    attempt_usages,
    claims_seat,
    jobs_claim_planned,
    jobs_expire,
    jobs_reap,
    jobs_record,
    jobs_release,
    jobs_renew,
    queue_has_due,
    queue_next_due,
)
from llmqueue.limits.ledger import buckets_reconcile
from llmqueue.models import DrainSlot
from llmqueue.worker.batching import Batcher, batch_key, batching_enabled
from llmqueue.worker.logs import attempt_log
from llmqueue.worker.reserve import Reserve, StepWork
from llmqueue.worker.scheduler import jobs_schedule
from llmqueue.worker.slots import (
    host_name,
    owner_tag,
    slot_acquire,
    slot_beat,
    slot_owner,
    slot_release,
    slots_reap_dead,
    stop_on_signals,
)
from llmqueue.worker.tasks import drain_enqueue, drain_spread

log = logging.getLogger(__name__)

#: how long a drain with a healthy reserve lets finished calls gather before a step. A step
#: costs ~3 ms of CPU however small, plus ~0.18 ms a job (bench/step.py), so longer gathers
#: cost less per job; but every step a new job waits for is delay for it: with 50 ms and a
#: reserve of one concurrency, a small user's 20 jobs waited for 220-300 of a big backlog's
#: instead of 160-200 (tests/integration/test_limits.py), so both stay small
COALESCE_S = 0.01
#: how often a drain looks for dead drains whose claims to give back (a read of the slots,
#: and a look in /proc for the pids of this machine)
REAP_DEAD_S = 1.0


# --- the drain ----------------------------------------------------------------------------------


def drain() -> str:
    """django-q2 entry point: run a drain on this worker if a slot is free."""
    owner = slot_owner()
    close_old_connections()
    slot = slot_acquire(host=host_name(), count=conf.DRAINS_PER_HOST, owner=owner)
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


@dataclasses.dataclass
class _Timers:
    """A drain's clock (the event loop's seconds): when it closes, and its chores' next times."""

    deadline: float
    last_busy: float
    next_beat: float
    next_reap: float
    next_spread: float
    #: the last claim found less than it asked for
    drained: bool = False

    @classmethod
    def starting(cls, start: float) -> _Timers:
        return cls(
            deadline=start + conf.DRAIN_MAX_SECONDS,
            last_busy=start,
            next_beat=start + conf.HEARTBEAT_S,
            next_reap=start,
            next_spread=start,
        )


class Drainer:
    """One drain: up to DRAIN_CONCURRENCY calls in flight, and a reserve of claimed jobs.

    A call that finishes starts the next one from the reserve at once, without waiting for
    the database; the steps (record outcomes, claim more) only top the reserve up, in
    batches that grow with the load. Reserved jobs are claimed like running ones (leased),
    but they count against their endpoint's max_concurrency only once they start, in the place
    of a call of this drain that ended (``llmqueue.worker.reserve``): no endpoint ever has
    more calls out than it allows, and a stopping drain gives its reserve straight back.
    """

    def __init__(self, *, slot: DrainSlot) -> None:
        self.slot = slot
        # The prefix of this drain's lease tokens: others find its claims by it if it dies.
        self.holder = owner_tag(slot.owner or "")
        self.concurrency = max(1, int(conf.DRAIN_CONCURRENCY))
        # Enough to feed the calls while a step runs; more would hold jobs out of fair turns
        # and priority order for longer, and start paid calls later (see COALESCE_S).
        self.reserve_size = max(1, self.concurrency // 2)
        # In queue order: a job claimed later but more urgent (or another owner's turn)
        # starts before the reserved ones it outranks.
        self.reserve = Reserve()
        #: the calls' tasks, and the batcher's futures of the claims it merges
        self.inflight: dict[asyncio.Future[AttemptResult], Claim] = {}
        self.finished: list[AttemptResult] = []
        self.wakeup = asyncio.Event()
        self.handled = 0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.upstream: Upstream | None = None
        self.spreading: asyncio.Task[None] | None = None
        # Embedding jobs with one input each go to the batcher, which merges them into calls
        # (llmqueue.worker.batching): a merged call takes one of the places, as one call.
        self.batcher: Batcher | None = None
        self.batched: set[asyncio.Future[AttemptResult]] = set()
        if batching_enabled():
            self.batcher = Batcher(
                send=self._send,
                max_size=int(conf.EMBED_BATCH_MAX),
                wait_s=float(conf.EMBED_BATCH_WAIT_MS) / 1000,
            )

    def stop_threadsafe(self, signum: int) -> None:
        """Stop claiming; let calls in flight finish for STOP_GRACE_S, then requeue the rest."""
        self.stopping = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.wakeup.set)

    # -- database steps (run in the DB thread) --

    def _step(self, results: list[AttemptResult], want: int, work: StepWork) -> list[Claim]:
        with writer_turn(), transaction.atomic():
            # The places taken first, then the calls that gave them up recorded: in one
            # transaction, so no endpoint ever counts fewer calls than are out.
            claims_seat(work.seating)
            jobs_release(claims=work.giving_back)
            jobs_record(results)
            endpoints_learn(r.call for r in results)
            buckets_reconcile(attempt_usages(results))
            now = timezone.now()
            schedule = jobs_schedule(limit=want, now=now, behind=work.behind, seats=work.seats)
            work.usable = schedule.usable
            return jobs_claim_planned(plan=schedule.plan, now=now, holder=self.holder)

    def _beat(self, tokens: list[str]) -> bool:
        """Renew the slot and our leases; False if the slot was taken from us."""
        kept = slot_beat(self.slot)
        jobs_renew(tokens=tokens)
        jobs_reap()
        jobs_expire()
        return kept

    def _reap_dead(self) -> None:
        try:
            if reaped := slots_reap_dead():
                log.warning("gave back %d claims of dead drains", reaped)
        except Exception:  # a look for the dead; the next one, or the leases, follow
            log.exception("could not look for dead drains")

    def _leave(self, *, hand_over: bool) -> None:
        slot_release(self.slot)
        # Released first, then looked: a submission that saw this drain live committed before
        # the release, so its job is visible here; one that committed later saw no live drain
        # and woke one itself. No job falls between the two.
        due = queue_next_due()
        if due is not None and (hand_over or due <= timezone.now()):
            drain_enqueue()

    # -- calls --

    async def _send(self, request: CallRequest, claim: Claim | None = None) -> CallResult:
        """One upstream call (for ``claim``, or for a merged batch); never raises."""
        assert self.upstream is not None
        try:
            async with asyncio.timeout(request.target.timeout_s + 5):
                return await self.upstream.call(request)
        except Exception as exc:  # a bug here must cost an attempt, never the job
            job_id = claim.job_id if claim is not None else None
            log.exception(
                "a call to %s (job %s) failed inside the worker",
                request.target.name,
                job_id,
                extra={"job_id": job_id, "endpoint": request.target.name, "outcome": "error"},
            )
            return CallResult.worker_error(request.target, exc)

    async def _call(self, claim: Claim) -> AttemptResult:
        request = CallRequest(kind=claim.kind, payload=claim.payload, target=claim.target)
        return AttemptResult(claim=claim, call=await self._send(request, claim))

    def _places(self) -> int:
        """Places taken: calls in flight, a merged call (or a batch still filling) as one."""
        if self.batcher is None:
            return len(self.inflight)
        return len(self.inflight) - len(self.batched) + self.batcher.places

    def _start_calls(self) -> None:
        assert self.loop is not None
        while self._places() < self.concurrency and not self.stopping:
            if (claim := self.reserve.next()) is None:
                break
            key = batch_key(claim) if self.batcher is not None else None
            call: asyncio.Future[AttemptResult]
            if self.batcher is not None and key is not None:
                call = self.batcher.submit(claim, key)
                self.batched.add(call)
            else:
                call = self.loop.create_task(self._call(claim))
            self.inflight[call] = claim
            call.add_done_callback(self._done)
        # Every place taken, all by batches still filling: no call is out to end and free a
        # place, so nothing could join them, and waiting would only delay them.
        b = self.batcher
        full = self._places() >= self.concurrency
        if b is not None and full and not b.sending and len(self.inflight) == len(self.batched):
            b.flush()

    def _done(self, task: asyncio.Future[AttemptResult]) -> None:
        self.inflight.pop(task, None)
        self.batched.discard(task)
        if task.cancelled():  # stopping: these are given back to the queue
            return
        result = task.result()
        self.finished.append(result)
        self.reserve.freed(result)
        attempt_log(result)
        self._start_calls()
        self.wakeup.set()

    # -- the loop --

    async def run(self) -> int:
        self.upstream = Upstream(max_connections=self.concurrency)
        loop = self.loop = asyncio.get_running_loop()
        t = _Timers.starting(loop.time())
        try:
            while not self.stopping:
                now = loop.time()
                closing = now >= t.deadline
                results, self.finished = self.finished, []
                work = self.reserve.work()
                want = await self._want(closing=closing, results=results, drained=t.drained)
                claims = await self._fill(results, want, work)
                if claims is None:  # the step failed: its results are kept for the next
                    continue
                if want > 0:
                    t.drained = len(claims) < want
                if claims or self.inflight or self.reserve:
                    t.last_busy = now
                await self._chores(t, now, full=bool(want) and len(claims) == want)
                if not self.inflight and not self.reserve and not claims:
                    if closing:
                        break
                    lingered = now - t.last_busy >= conf.DRAIN_LINGER_S
                    if lingered and await _db(queue_next_due)() is None:
                        break
                await self._pause(
                    idle=not self.inflight and now - t.last_busy >= conf.DRAIN_LINGER_S
                )
        finally:
            await self._settle(hand_over=not self.stopping and loop.time() >= t.deadline)
        return self.handled

    async def _want(self, *, closing: bool, results: list[AttemptResult], drained: bool) -> int:
        """How many jobs to claim: the free places and the reserve's room (none when closing).
        An idle poll asks first, read-only, whether anything is due at all: on SQLite a claim
        takes the write lock, which the other drains then wait for."""
        if closing:
            return 0
        want = self.concurrency + self.reserve_size - self._places() - len(self.reserve)
        if want > 0 and not results and drained and not await _db(queue_has_due)():
            return 0
        return want

    async def _fill(
        self, results: list[AttemptResult], want: int, work: StepWork
    ) -> list[Claim] | None:
        """One step (record ``results``, claim ``want``), and start calls from the reserve.
        None if the step failed: its work goes back to be done by the next one."""
        if not results and want <= 0 and not work:
            return []
        if want > 0:
            work.behind = self.reserve.behind_room(self.inflight.values())
            work.seats = self.concurrency - self._places() - self.reserve.seated
        try:
            claims = await _db(self._step)(results, want, work)
        except Exception:
            log.exception("drain step failed; keeping %d results", len(results))
            self.finished[:0] = results
            self.reserve.work_failed(work)
            await asyncio.sleep(1.0)
            return None
        self.handled += len(results)
        self.reserve.work_done(work, claims)
        self._start_calls()
        return claims

    async def _chores(self, t: _Timers, now: float, *, full: bool) -> None:
        """What a drain does every so often: beat (renew the slot and the leases), look for
        dead drains, and, when ``full``, ask for help."""
        assert self.loop is not None
        if now >= t.next_beat:
            held = [*self.inflight.values(), *self.reserve.claims()]
            if not await _db(self._beat)([c.token for c in held]):
                log.warning("drain %s lost its slot; stopping", self.slot.owner)
                t.deadline = now
            t.next_beat = now + conf.HEARTBEAT_S
        if now >= t.next_reap:
            # A dead drain's claims hold its endpoints' capacity until given back: looked
            # for often, so that a crash costs the fleet seconds, not a lease.
            await _db(self._reap_dead)()
            t.next_reap = now + REAP_DEAD_S
        if full and now >= t.next_spread:
            # Full: likely more due work than this drain can hold. Ask for help off the step
            # path (its own thread and connection).
            help_ask = sync_to_async(drain_spread, thread_sensitive=False)
            self.spreading = self.loop.create_task(help_ask())
            t.next_spread = now + 5.0

    async def _pause(self, *, idle: bool) -> None:
        """Wait for a call to finish (or a poll's time), then let results gather a moment."""
        timeout = max(conf.DRAIN_POLL_S, 1.0) if idle else conf.DRAIN_POLL_S
        if not self.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)
        self.wakeup.clear()
        if len(self.reserve) >= self.reserve_size // 2:
            # Calls are fed from the reserve meanwhile: let results gather, so that a step
            # writes more of them at once (its fixed cost is most of its cost).
            await asyncio.sleep(COALESCE_S)

    async def _settle(self, *, hand_over: bool) -> None:
        """Finish in-flight calls (for STOP_GRACE_S), give back the rest, record, leave."""
        assert self.loop is not None
        grace_end = self.loop.time() + conf.STOP_GRACE_S
        while self.inflight and (left := grace_end - self.loop.time()) > 0:
            await asyncio.wait(list(self.inflight), timeout=min(left, conf.HEARTBEAT_S))
            if self.inflight:
                # Still beating: a settling drain must not look dead to the others, who would
                # give its claims back to the queue while its calls still run.
                held = [*self.inflight.values(), *self.reserve.claims()]
                try:
                    await _db(self._beat)([c.token for c in held])
                except Exception:  # the give-back below matters more than a beat
                    log.exception("drain %s could not beat while settling", self.slot.owner)
        given_back = [*self.inflight.values(), *self.reserve.clear()]
        for task in list(self.inflight):
            task.cancel()
        if given_back:
            await _db(jobs_release)(claims=given_back)
        if self.finished:
            results, self.finished = self.finished, []
            await _db(self._step)(results, 0, self.reserve.work())
            self.handled += len(results)
        if self.upstream is not None:
            await self.upstream.aclose()
        await _db(self._leave)(hand_over=hand_over)
        await _db(connections.close_all)()
