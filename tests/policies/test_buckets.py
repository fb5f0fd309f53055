"""Token buckets over a fake clock, and the bound they promise for random arrivals."""

from __future__ import annotations

import math
import random

import pytest

from llmqueue.policies.buckets import (
    DEFAULT_COMPLETION_TOKENS,
    Bucket,
    BucketState,
    bucket_pause,
    bucket_peek,
    bucket_refund,
    bucket_take,
    estimate_tokens,
)

T0 = 1_000_000.0
EPS = 1e-6
SPEC = Bucket(capacity=10.0, refill_per_s=2.0)


def test_a_full_bucket_admits_a_burst_of_its_capacity_then_refuses() -> None:
    state = BucketState.full(SPEC, T0)
    for _ in range(10):
        ok, state, wait = bucket_take(state, 1, T0, SPEC)
        assert ok and wait == 0.0
    ok, after, wait = bucket_take(state, 1, T0, SPEC)
    assert not ok
    assert after is state  # a refusal writes nothing
    assert wait == pytest.approx(0.5)


def test_refill_is_lazy_and_capped_at_capacity() -> None:
    state = BucketState(tokens=0.0, updated_at=T0)
    assert bucket_peek(state, T0 + 1.5, SPEC) == pytest.approx(3.0)
    assert bucket_peek(state, T0 + 1_000, SPEC) == SPEC.capacity


def test_wait_is_exact_just_before_and_at_it() -> None:
    state = BucketState(tokens=1.0, updated_at=T0)
    ok, _, wait = bucket_take(state, 4, T0, SPEC)
    assert not ok and wait == pytest.approx(1.5)
    assert not bucket_take(state, 4, T0 + wait - EPS, SPEC)[0]
    assert bucket_take(state, 4, T0 + wait, SPEC)[0]


def test_a_cost_over_capacity_can_never_be_paid() -> None:
    ok, _, wait = bucket_take(BucketState.full(SPEC, T0), 10.5, T0, SPEC)
    assert not ok and wait == math.inf


def test_a_bucket_that_never_refills_says_so() -> None:
    spec = Bucket(capacity=5.0, refill_per_s=0.0)
    ok, _, wait = bucket_take(BucketState(tokens=1.0, updated_at=T0), 2, T0, spec)
    assert not ok and wait == math.inf


def test_negative_cost_is_an_error() -> None:
    with pytest.raises(ValueError):
        bucket_take(BucketState.full(SPEC, T0), -1, T0, SPEC)


def test_a_take_at_an_earlier_clock_does_not_run_time_backwards() -> None:
    state = BucketState(tokens=4.0, updated_at=T0)
    ok, after, _ = bucket_take(state, 1, T0 - 5.0, SPEC)
    assert ok
    assert (after.tokens, after.updated_at) == (3.0, T0)


def test_refund_returns_tokens_up_to_capacity() -> None:
    state = BucketState(tokens=4.0, updated_at=T0)
    assert bucket_refund(state, 3, SPEC).tokens == 7.0
    assert bucket_refund(state, 100, SPEC).tokens == SPEC.capacity
    assert bucket_refund(state, 0, SPEC) is state


def test_an_extra_charge_carries_a_debt_that_the_refill_pays_off() -> None:
    state = bucket_refund(BucketState(tokens=1.0, updated_at=T0), -5, SPEC)
    assert state.tokens == -4.0
    ok, _, wait = bucket_take(state, 1, T0, SPEC)
    assert not ok and wait == pytest.approx(2.5)  # 5 tokens at 2/s
    assert bucket_take(state, 1, T0 + 2.5, SPEC)[0]


def test_pause_empties_the_bucket_until_then_and_refills_from_zero() -> None:
    state = bucket_pause(BucketState.full(SPEC, T0), T0 + 30)
    assert bucket_peek(state, T0 + 30 - EPS, SPEC) == 0.0
    ok, _, wait = bucket_take(state, 1, T0 + 10, SPEC)
    assert not ok and wait == pytest.approx(20.5)
    assert not bucket_take(state, 1, T0 + 30, SPEC)[0]
    assert bucket_take(state, 1, T0 + 30.5, SPEC)[0]


def test_pause_keeps_a_debt_and_never_shortens_a_longer_pause() -> None:
    state = BucketState(tokens=-3.0, updated_at=T0 + 60)
    assert bucket_pause(state, T0 + 30) is state
    longer = bucket_pause(state, T0 + 90)
    assert (longer.tokens, longer.updated_at) == (-3.0, T0 + 90)


def test_every_change_bumps_the_version() -> None:
    state = BucketState.full(SPEC, T0)
    _, state, _ = bucket_take(state, 1, T0, SPEC)
    state = bucket_refund(state, 1, SPEC)
    state = bucket_pause(state, T0 + 1)
    assert state.version == 3


def test_per_minute() -> None:
    assert Bucket.per_minute(120) == Bucket(capacity=120, refill_per_s=2.0)
    with pytest.raises(ValueError):
        Bucket(capacity=0, refill_per_s=1)


def test_per_minute_holds_burst_seconds_of_refill_at_least_one_and_at_most_the_minute() -> None:
    assert Bucket.per_minute(600, burst_s=1) == Bucket(capacity=10, refill_per_s=10.0)
    assert Bucket.per_minute(600, burst_s=5) == Bucket(capacity=50, refill_per_s=10.0)
    assert Bucket.per_minute(6, burst_s=1).capacity == 1  # a slow limit can still pay one
    assert Bucket.per_minute(600, burst_s=600).capacity == 600  # never past the minute
    with pytest.raises(ValueError):
        Bucket.per_minute(600, burst_s=0)


@pytest.mark.parametrize("burst_s", [1.0, 2.0, 5.0])
def test_a_paced_bucket_admits_at_most_the_burst_plus_the_refill_in_any_second(
    burst_s: float,
) -> None:
    """600 per minute, callers asking every 10 ms for 2 minutes on a fake clock: no 1 s
    window admits more than 10 + burst, and the long-run pace is the limit."""
    spec = Bucket.per_minute(600, burst_s=burst_s)
    state = BucketState.full(spec, T0)
    admitted: list[float] = []
    for step in range(12_000):
        now = T0 + step * 0.01
        ok, state, _ = bucket_take(state, 1, now, spec)
        if ok:
            admitted.append(now)
    j = 0
    for i, t in enumerate(admitted):
        while admitted[j] <= t - 1.0:
            j += 1
        assert i - j + 1 <= 10 + spec.capacity, (t - T0, i - j + 1)
    assert len(admitted) == pytest.approx(1200 + spec.capacity, abs=1)
    in_first_second = [t for t in admitted if t < T0 + 1.0]
    assert len(in_first_second) <= spec.capacity + 10 < 600  # not the whole minute at once


# -- the promise, for random arrivals -------------------------------------------------------


def _admitted_bound_holds(admitted: list[tuple[float, float]], spec: Bucket) -> None:
    """In every interval [t_i, t_j] between admissions, the cost admitted fits the bound."""
    prefix = [0.0]
    for _, cost in admitted:
        prefix.append(prefix[-1] + cost)
    for i, (start, _) in enumerate(admitted):
        for j in range(i, len(admitted)):
            total = prefix[j + 1] - prefix[i]
            bound = spec.capacity + spec.refill_per_s * (admitted[j][0] - start)
            assert total <= bound + 1e-9, (i, j, total, bound)


@pytest.mark.parametrize("seed", range(40))
def test_admitted_cost_never_exceeds_capacity_plus_rate_times_t(seed: int) -> None:
    rng = random.Random(seed)
    spec = Bucket(capacity=rng.uniform(1, 50), refill_per_s=rng.uniform(0.1, 20))
    state = BucketState.full(spec, T0)
    now = T0
    admitted: list[tuple[float, float]] = []  # (time, net cost) of each admitted take
    refused = 0
    # Demand of about twice the refill rate, with some arrivals at the same instant.
    mean_gap = 0.15 * spec.capacity / spec.refill_per_s
    for _ in range(400):
        now += rng.expovariate(1 / mean_gap) if rng.random() < 0.9 else 0.0
        cost = rng.uniform(0, spec.capacity * 0.6)
        if rng.random() < 0.03:
            state = bucket_pause(state, now + rng.uniform(0, 5))
        ok, state, wait = bucket_take(state, cost, now, spec)
        if ok:
            # Usage came in under the estimate: refund part of it, as reconciling does.
            refund = cost * rng.random() if rng.random() < 0.3 else 0.0
            state = bucket_refund(state, refund, spec)
            admitted.append((now, cost - refund))
        else:
            refused += 1
            assert wait > 0
            # The wait is exact: had nobody else come, the take would pass then, not sooner.
            assert bucket_take(state, cost, now + wait + 1e-9, spec)[0]
            assert not bucket_take(state, cost, now + wait * (1 - 1e-6) - 1e-9, spec)[0]
    assert len(admitted) > 50 and refused > 50
    _admitted_bound_holds(admitted, spec)


# -- estimates ------------------------------------------------------------------------------


def test_chat_estimate_is_a_quarter_token_per_char_plus_the_answer_budget() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}
    # 40 + len("user") = 44 chars -> 11 tokens
    assert estimate_tokens("chat", payload) == 11 + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens("chat", {**payload, "max_tokens": 10}) == 21
    assert estimate_tokens("chat", {**payload, "max_completion_tokens": 5, "max_tokens": 10}) == 16
    assert estimate_tokens("chat", {**payload, "max_tokens": 10, "n": 3}) == 41


def test_chat_estimate_reads_content_parts_and_skips_images() -> None:
    image = "data:image/png;base64," + "A" * 100_000
    payload = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "y" * 36},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            }
        ],
        "max_tokens": 1,
    }
    # "user" + "text" + 36 chars + "image_url" (the part's type) = 53 chars -> 14 tokens
    assert estimate_tokens("chat", payload) == 14 + 1


def test_completion_estimate_counts_prompt_strings_and_token_ids() -> None:
    assert estimate_tokens("completion", {"prompt": "z" * 9, "max_tokens": 0}) == 3 + 256
    assert estimate_tokens("completion", {"prompt": [1, 2, 3], "max_tokens": 4}) == 7


def test_embedding_estimate_is_the_input_alone() -> None:
    assert estimate_tokens("embedding", {"input": ["a" * 8, "b" * 8], "max_tokens": 99}) == 4
    assert estimate_tokens("embedding", {"input": [[1, 2], [3]]}) == 3
    assert estimate_tokens("embedding", {}) == 0
