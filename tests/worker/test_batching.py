"""Micro-batching's merging and splitting (llmqueue.worker.batching), without a network: the
batcher's calls go to a fake upstream that answers like the stand-in."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.utils import timezone

from llmqueue import metrics
from llmqueue.calls.types import CallOutcome, CallRequest, CallResult, Target
from llmqueue.checks import check_settings
from llmqueue.jobs import AttemptResult, Claim
from llmqueue.models import Outcome
from llmqueue.standin.echo import echo_answer
from llmqueue.worker.batching import (
    Batcher,
    batch_key,
    batching_enabled,
    merged_request,
    split_result,
    usage_shares,
)

TARGET = Target(id=1, name="ep", base_url="http://upstream.test/v1", api_key="k", timeout_s=5)
OTHER = Target(id=2, name="ep2", base_url="http://other.test/v1", api_key="k", timeout_s=5)


def claim(
    text: Any, *, job_id: int = 1, kind: str = "embedding", target: Target = TARGET, **params: Any
) -> Claim:
    payload = {"model": "m", "input": text, **params}
    return Claim(
        job_id=job_id, token="t", kind=kind, payload=payload, attempt=1, max_attempts=5,
        target=target,
    )  # fmt: skip


def vector(text: str) -> list[float]:
    return echo_answer("embedding", {"input": text})["data"][0]["embedding"]


def result(outcome: Outcome = Outcome.SUCCESS, body: Any = None, **kw: Any) -> CallResult:
    health = CallOutcome.SUCCESS if outcome == Outcome.SUCCESS else CallOutcome.FAILURE
    return CallResult(
        target=TARGET,
        started_at=timezone.now(),
        duration_ms=5.0,
        outcome=outcome,
        body=body,
        health=kw.pop("health", health),
        **kw,
    )


# --- what may go together ---------------------------------------------------------------------


def test_single_input_embeddings_with_the_same_endpoint_and_parameters_share_a_key() -> None:
    key = batch_key(claim("a", dimensions=8, user="x"))
    assert key is not None
    assert batch_key(claim(["b"], user="x", dimensions=8)) == key  # a list of one; any order
    assert batch_key(claim("a", dimensions=16, user="x")) != key
    assert batch_key(claim("a", dimensions=8, user="x", target=OTHER)) != key


@pytest.mark.parametrize(
    "c",
    [
        claim(["a", "b"]),  # already a list: it goes as it is
        claim([[1, 2, 3]]),  # token ids
        claim(""),
        claim(5),
        claim("hello", kind="chat"),
    ],
)
def test_other_jobs_go_alone(c: Claim) -> None:
    if c.payload["input"] == "":
        assert batch_key(c) is not None  # an empty text is still one text
    else:
        assert batch_key(c) is None


def test_a_merged_request_holds_the_inputs_in_order_and_the_shared_parameters() -> None:
    request = merged_request([claim("a", dimensions=8), claim(["b"], dimensions=8)])
    assert request.payload == {"model": "m", "dimensions": 8, "input": ["a", "b"]}
    assert request.kind == "embedding"
    assert request.target == TARGET


# --- usage shares ----------------------------------------------------------------------------


def test_usage_shares_sum_exactly_to_the_total() -> None:
    rng = random.Random(12)
    for _ in range(500):
        weights = [rng.randrange(0, 50) for _ in range(rng.randrange(1, 70))]
        total = rng.randrange(0, 5000)
        shares = usage_shares(total, weights)
        assert sum(shares) == total
        assert all(s >= 0 for s in shares)
        # each share is its exact part, rounded one way or the other
        whole = sum(max(1, w) for w in weights)
        for s, w in zip(shares, weights, strict=True):
            assert abs(s - total * max(1, w) / whole) < 1


def test_usage_shares_follow_the_weights_and_break_ties_in_order() -> None:
    assert usage_shares(10, [1, 1, 3]) == [2, 2, 6]
    assert usage_shares(2, [1, 1, 1]) == [1, 1, 0]
    assert usage_shares(0, [5, 5]) == [0, 0]
    assert usage_shares(7, []) == []


# --- splitting an answer ---------------------------------------------------------------------


def test_an_answer_is_split_by_index_not_by_position() -> None:
    texts = ["alpha", "beta gamma", "delta"]
    body = echo_answer("embedding", {"model": "m", "input": texts})
    body["data"].reverse()  # a server may answer in any order: the index says whose it is
    body["usage"] = {"prompt_tokens": 11, "total_tokens": 11}
    parts = split_result(result(body=body), [len(t) for t in texts])
    for text, part in zip(texts, parts, strict=True):
        assert part.outcome == Outcome.SUCCESS
        (item,) = part.body["data"]
        assert item == {"object": "embedding", "index": 0, "embedding": vector(text)}
        assert part.body["model"] == "m"
        assert part.body["object"] == "list"
    assert [p.body["usage"]["prompt_tokens"] for p in parts] == [3, 5, 3]
    assert sum(p.body["usage"]["total_tokens"] for p in parts) == 11


def test_only_the_first_part_carries_the_calls_health_and_pause() -> None:
    body = echo_answer("embedding", {"input": ["a", "b", "c"]})
    parts = split_result(result(body=body, pause_s=2.0), [1, 1, 1])
    assert [p.health for p in parts] == [CallOutcome.SUCCESS, None, None]
    assert [p.pause_s for p in parts] == [2.0, None, None]


def test_a_failed_call_is_every_jobs_failure() -> None:
    failed = result(Outcome.RETRY, http_status=503, error="HTTP 503: busy", retry_after=2.0)
    parts = split_result(failed, [1, 1])
    assert [(p.outcome, p.error, p.retry_after) for p in parts] == [
        (Outcome.RETRY, "HTTP 503: busy", 2.0)
    ] * 2
    assert [p.health for p in parts] == [CallOutcome.FAILURE, None]


@pytest.mark.parametrize(
    "data",
    [
        [{"index": 0, "embedding": [1]}],  # one short
        [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [2]}],  # index twice
        [{"index": 0, "embedding": [1]}, {"index": 2, "embedding": [2]}],  # out of range
        "nope",
    ],
)
def test_an_answer_that_does_not_match_its_inputs_is_a_retryable_endpoint_failure(
    data: Any,
) -> None:
    parts = split_result(result(body={"data": data}), [1, 1])
    assert all(p.outcome == Outcome.RETRY and p.body is None for p in parts)
    assert "one item per input" in parts[0].error
    assert [p.health for p in parts] == [CallOutcome.FAILURE, None]


# --- the batcher -----------------------------------------------------------------------------


class FakeUpstream:
    """Answers like the stand-in: a vector per input, a 400 for a call with a POISON input."""

    def __init__(self, answer: Callable[[CallRequest], CallResult] | None = None) -> None:
        self.requests: list[CallRequest] = []
        self.answer = answer

    async def send(self, request: CallRequest) -> CallResult:
        self.requests.append(request)
        if self.answer is not None:
            return self.answer(request)
        inputs = request.payload["input"]
        if any("POISON" in t for t in inputs):
            return result(
                Outcome.REJECTED, http_status=400, error="HTTP 400: poisoned", health=None
            )
        return result(body=echo_answer("embedding", request.payload))

    def sizes(self) -> list[int]:
        return [len(r.payload["input"]) for r in self.requests]


def run_batch(
    claims: Iterable[Claim],
    *,
    upstream: FakeUpstream,
    max_size: int = 64,
    wait_s: float = 3600.0,
    flush: bool = False,
) -> list[AttemptResult]:
    """Submit ``claims`` together and wait for every result. With the default wait, a batch
    goes only when it is full (or on ``flush``): a test that needed the timer would hang."""

    async def go() -> list[AttemptResult]:
        batcher = Batcher(send=upstream.send, max_size=max_size, wait_s=wait_s)
        futures = [batcher.submit(c, batch_key(c)) for c in claims]
        if flush:
            batcher.flush()
        async with asyncio.timeout(30):
            return list(await asyncio.gather(*futures))

    return asyncio.run(go())


def texts(n: int, poisoned: Iterable[int] = ()) -> list[str]:
    bad = set(poisoned)
    return [f"text {i}" + (" POISON" if i in bad else "") for i in range(n)]


def test_a_full_batch_goes_at_once_as_one_call_and_each_job_gets_its_own_answer() -> None:
    upstream = FakeUpstream()
    before = metrics.EMBED_BATCH_SIZE._sum.get()
    ts = texts(10)
    results = run_batch(
        [claim(t, job_id=i) for i, t in enumerate(ts)], upstream=upstream, max_size=5
    )
    assert upstream.sizes() == [5, 5]
    assert metrics.EMBED_BATCH_SIZE._sum.get() - before == 10
    for i, (text, r) in enumerate(zip(ts, results, strict=True)):
        assert r.claim.job_id == i
        assert r.call.body["data"][0]["embedding"] == vector(text)


def test_a_batch_that_does_not_fill_goes_after_the_wait() -> None:
    upstream = FakeUpstream()
    run_batch([claim(t) for t in texts(3)], upstream=upstream, wait_s=0.0)
    assert upstream.sizes() == [3]


def test_flush_sends_every_waiting_batch_and_keys_never_mix() -> None:
    upstream = FakeUpstream()
    claims = [claim(t, dimensions=8 if i % 2 else 16) for i, t in enumerate(texts(6))]
    results = run_batch(claims, upstream=upstream, flush=True)
    assert sorted(upstream.sizes()) == [3, 3]
    assert {r.payload["dimensions"] for r in upstream.requests} == {8, 16}
    for c, r in zip(claims, results, strict=True):
        assert r.claim is c
        assert r.call.body["data"][0]["embedding"] == vector(c.payload["input"])


def test_a_poisoned_input_is_bisected_out_and_fails_alone() -> None:
    upstream = FakeUpstream()
    results = run_batch(
        [claim(t) for t in texts(16, poisoned=[11])], upstream=upstream, max_size=16
    )
    assert [r.call.outcome for r in results] == [Outcome.SUCCESS] * 11 + [Outcome.REJECTED] + [
        Outcome.SUCCESS
    ] * 4
    assert results[11].call.error == "HTTP 400: poisoned"
    # 16 -> 8 + 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: two extra calls per halving
    assert len(upstream.requests) == 1 + 2 * 4


def test_bisection_is_bounded_and_the_jobs_it_could_not_clear_retry() -> None:
    upstream = FakeUpstream()
    results = run_batch(
        [claim(t) for t in texts(8, poisoned=range(8))], upstream=upstream, max_size=8
    )
    # a budget of 4 x log2(8) = 12 extra calls: not enough to try all 8 alone (14)
    assert len(upstream.requests) == 1 + 12
    outcomes = [r.call.outcome for r in results]
    assert Outcome.SUCCESS not in outcomes
    # 8 -> 4 + 4 -> four pairs (6 spent); 6 left split three pairs: six jobs end rejected
    # alone, the last pair retries (the budget cannot tell which of them is at fault)
    assert outcomes.count(Outcome.REJECTED) == 6
    retried = [r.call for r in results if r.call.outcome == Outcome.RETRY]
    assert len(retried) == 2
    assert all("not split further" in c.error for c in retried)


def test_a_failed_merged_call_reaches_every_job_for_its_own_retry() -> None:
    upstream = FakeUpstream(lambda r: result(Outcome.RETRY, http_status=503, error="HTTP 503"))
    claims = [claim(t, job_id=i) for i, t in enumerate(texts(4))]
    results = run_batch(claims, upstream=upstream, max_size=4)
    assert len(upstream.requests) == 1
    assert [(r.claim.job_id, r.call.outcome, r.call.error) for r in results] == [
        (i, Outcome.RETRY, "HTTP 503") for i in range(4)
    ]


def test_a_bug_costs_each_job_an_attempt_never_the_job() -> None:
    def broken(request: CallRequest) -> CallResult:
        raise RuntimeError("boom")

    results = run_batch([claim(t) for t in texts(3)], upstream=FakeUpstream(broken), flush=True)
    assert [r.call.outcome for r in results] == [Outcome.RETRY] * 3
    assert all("worker error: RuntimeError: boom" in r.call.error for r in results)


def test_a_cancelled_job_is_left_out_of_its_batch() -> None:
    upstream = FakeUpstream()

    async def go() -> None:
        batcher = Batcher(send=upstream.send, max_size=64, wait_s=3600.0)
        a, b, c = (claim(t) for t in texts(3))
        fa = batcher.submit(a, batch_key(a))
        fb = batcher.submit(b, batch_key(b))
        fc = batcher.submit(c, batch_key(c))
        fb.cancel()  # a stopping drain cut its job off
        assert batcher.waiting == 3
        batcher.flush()
        assert batcher.waiting == 0
        async with asyncio.timeout(30):
            await asyncio.gather(fa, fc)

    asyncio.run(go())
    assert upstream.requests[0].payload["input"] == ["text 0", "text 2"]


# --- settings --------------------------------------------------------------------------------


def test_a_setting_turns_merging_off(settings: Any) -> None:
    settings.LLMQUEUE = {}
    assert batching_enabled()
    settings.LLMQUEUE = {"EMBED_BATCHING": False}
    assert not batching_enabled()
    settings.LLMQUEUE = {"EMBED_BATCH_MAX": 1}
    assert not batching_enabled()


@pytest.mark.parametrize(
    "values", [{"EMBED_BATCH_MAX": 0}, {"EMBED_BATCH_MAX": 4096}, {"EMBED_BATCH_WAIT_MS": -1}]
)
def test_settings_that_cannot_work_are_named(settings: Any, values: dict[str, Any]) -> None:
    settings.LLMQUEUE = values
    assert [e.id for e in check_settings()] == ["llmqueue.E020"]
