"""Micro-batching: the scalable-processing pattern's BatchProcessor, for embeddings.

Every OpenAI-compatible server takes a list of inputs per ``POST /embeddings``. A drain hands
each claimed embedding job that has a single input to a ``Batcher``; jobs with the same
endpoint (target), model and parameters (everything but ``input``) wait together until there
are ``EMBED_BATCH_MAX`` of them or the first has waited ``EMBED_BATCH_WAIT_MS``, then go as one
call. Its answer is split back: each job gets its own ``CallResult`` whose body is an ordinary
embeddings response with its one vector at index 0 and its share of the usage, so that the
recorder, the cache, the token buckets and the attempt log treat it like any other job (each
keeps its own cache entry, rate-limit charge and attempt count). Jobs of different users may
share a call; each answer item is matched to its job by its ``index``, so they never mix.

    merged call fails, retryable (5xx, timeout, 429)   each job gets that result: each retries
                                                        on its own schedule
    merged call rejected (a 4xx)                       one bad input must not sink the others:
                                                        the halves are sent again, recursively,
                                                        so only the bad input ends rejected
                                                        (at most BISECT_DEPTH_FACTOR x log2(n)
                                                        extra calls; past that, the rest retry)

Only the first job of a call carries the call's ``health`` (and pause): the breaker, the
latency average and the endpoint's failure share see one call, not one per job.

The pure part (``batch_key``, ``merged_request``, ``split_result``, ``usage_shares``) is tested
without a network; ``Batcher`` is the asyncio part the drain uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from llmqueue import metrics
from llmqueue.calls.types import CallOutcome, CallRequest, CallResult
from llmqueue.conf import conf
from llmqueue.jobs import AttemptResult, Claim
from llmqueue.models import Kind, Outcome

log = logging.getLogger(__name__)

#: extra calls a rejected merged call of n inputs may cost while it is bisected:
#: this x ceil(log2 n), enough to isolate two bad inputs (one costs 2 calls per halving)
BISECT_DEPTH_FACTOR = 4

Send = Callable[[CallRequest], Awaitable[CallResult]]


def batching_enabled() -> bool:
    return bool(conf.EMBED_BATCHING) and int(conf.EMBED_BATCH_MAX) > 1


# --- the pure part ------------------------------------------------------------------------------


def single_input(value: Any) -> str | None:
    """The text of an ``input`` that is one string, or a list of one; None otherwise."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else None


def batch_key(claim: Claim) -> Hashable | None:
    """What jobs must share to go in one call: the endpoint and every parameter but ``input``.
    None: the job goes alone (not an embedding, or not a single text input)."""
    if claim.kind != Kind.EMBEDDING or single_input(claim.payload.get("input")) is None:
        return None
    params = {k: v for k, v in claim.payload.items() if k != "input"}
    try:
        return (claim.target, json.dumps(params, sort_keys=True, separators=(",", ":")))
    except (TypeError, ValueError):
        return None


def merged_request(claims: Sequence[Claim]) -> CallRequest:
    """One embeddings request for ``claims`` (all of one ``batch_key``): their inputs in order."""
    first = claims[0]
    payload = {k: v for k, v in first.payload.items() if k != "input"}
    payload["input"] = [single_input(c.payload.get("input")) for c in claims]
    return CallRequest(kind=first.kind, payload=payload, target=first.target)


def usage_shares(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole numbers that sum to it exactly
    (largest remainders get the leftover units; ties go to the earlier one)."""
    n = len(weights)
    if n == 0:
        return []
    weights = [max(1, w) for w in weights]
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [math.floor(x) for x in exact]
    leftover = total - sum(shares)
    by_remainder = sorted(range(n), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:leftover]:
        shares[i] += 1
    return shares


def _split_usage(usage: Any, weights: Sequence[int]) -> list[dict[str, Any]] | None:
    if not isinstance(usage, dict):
        return None
    parts: list[dict[str, Any]] = [{} for _ in weights]
    for name, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            for part, share in zip(parts, usage_shares(value, weights), strict=True):
                part[name] = share
    return parts


def _items_by_index(body: Any, n: int) -> list[dict[str, Any]] | None:
    """The answer's n embedding items in input order, by their ``index``; None if it does not
    hold exactly one for each input."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != n:
        return None
    items: list[dict[str, Any] | None] = [None] * n
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            return None
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < n or items[index] is not None:
            return None
        items[index] = item
    return items  # type: ignore[return-value]  # every slot was filled exactly once


def _one_call(results: list[CallResult]) -> list[CallResult]:
    """Keep the call's health and pause on the first result only: the endpoint made one call."""
    return [results[0]] + [dataclasses.replace(r, health=None, pause_s=None) for r in results[1:]]


def split_result(call: CallResult, weights: Sequence[int]) -> list[CallResult]:
    """One result per input of a merged call: a failure is every job's failure; a success
    gives each its own embeddings response (its vector at index 0, its share of the usage)."""
    n = len(weights)
    if call.outcome != Outcome.SUCCESS:
        return _one_call([call] * n)
    items = _items_by_index(call.body, n)
    if items is None:
        # Like a 2xx that is not JSON: the endpoint did not answer as it should.
        bad = dataclasses.replace(
            call,
            outcome=Outcome.RETRY,
            body=None,
            health=CallOutcome.FAILURE,
            error=f"merged embeddings answer does not hold one item per input ({n} inputs)",
        )
        return _one_call([bad] * n)
    body = call.body
    rest = {k: v for k, v in body.items() if k not in ("data", "usage")}
    usages = _split_usage(body.get("usage"), weights)
    results = []
    for i, item in enumerate(items):
        own: dict[str, Any] = {**rest, "data": [{**item, "index": 0}]}
        if usages is not None:
            own["usage"] = usages[i]
        results.append(dataclasses.replace(call, body=own))
    return _one_call(results)


# --- the asyncio part ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Waiting:
    claim: Claim
    future: asyncio.Future[AttemptResult]

    @property
    def weight(self) -> int:
        return len(single_input(self.claim.payload.get("input")) or "")


class Batcher:
    """Collects batchable claims by ``batch_key`` and sends each batch as one call.

    ``submit`` returns a future that always ends with the claim's ``AttemptResult`` (a bug or
    a lost call ends as a retryable worker error, never an exception), unless the drain
    cancels it (stopping). ``send`` makes one call and never raises (the drain's guarded call).
    """

    def __init__(self, *, send: Send, max_size: int, wait_s: float) -> None:
        self.send = send
        self.max_size = max(1, max_size)
        self.wait_s = max(0.0, wait_s)
        self._groups: dict[Hashable, list[_Waiting]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Claims collected but not sent yet."""
        return sum(len(g) for g in self._groups.values())

    @property
    def sending(self) -> int:
        """Merged calls out (with their bisection's re-sends)."""
        return len(self._tasks)

    @property
    def places(self) -> int:
        """The drain's places this takes: a merged call out, or a batch filling, is one."""
        return len(self._groups) + len(self._tasks)

    def submit(self, claim: Claim, key: Hashable) -> asyncio.Future[AttemptResult]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(claim, loop.create_future())
        group = self._groups.setdefault(key, [])
        group.append(waiting)
        if len(group) >= self.max_size:
            self._flush(key)
        elif len(group) == 1:
            self._timers[key] = loop.call_later(self.wait_s, self._flush, key)
        return waiting.future

    def flush(self) -> None:
        """Send every waiting batch now (nothing more can join them: the drain is full)."""
        for key in list(self._groups):
            self._flush(key)

    def _flush(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        group = [w for w in self._groups.pop(key, []) if not w.future.done()]
        if group:
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: list[_Waiting]) -> None:
        try:
            budget = BISECT_DEPTH_FACTOR * math.ceil(math.log2(len(group))) if len(group) > 1 else 0
            answers = await self._send(group, [budget])
        except Exception as exc:  # a bug here must cost an attempt, never the jobs
            log.exception("a merged call of %d jobs failed inside the worker", len(group))
            failed = CallResult.worker_error(group[0].claim.target, exc)
            answers = [(w, failed) for w in group]
        # This call's place is free before its jobs are done: the drain, told that they
        # are, starts the next calls at once.
        self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        for w, result in answers:
            if not w.future.done():
                w.future.set_result(AttemptResult(claim=w.claim, call=result))

    async def _send(
        self, group: list[_Waiting], budget: list[int]
    ) -> list[tuple[_Waiting, CallResult]]:
        """One call for ``group``; a rejected one is sent again in halves while ``budget``
        (extra calls, shared by the whole bisection) lasts."""
        metrics.embed_batch(len(group))
        call = await self.send(merged_request([w.claim for w in group]))
        if call.outcome == Outcome.REJECTED and len(group) > 1:
            if budget[0] >= 2:
                budget[0] -= 2
                half = len(group) // 2
                left, right = await asyncio.gather(
                    self._send(group[:half], budget), self._send(group[half:], budget)
                )
                return left + right
            # Out of budget: the bad input is in here somewhere, but these jobs are not known
            # to be at fault. They retry (next time with other neighbours).
            call = dataclasses.replace(
                call,
                outcome=Outcome.RETRY,
                error=f"merged call rejected, not split further: {call.error}"[:2000],
            )
        return list(zip(group, split_result(call, [w.weight for w in group]), strict=True))
