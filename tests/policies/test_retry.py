"""The retry decision at each boundary: plain values in, a decision out (no database)."""

from __future__ import annotations

import random

import pytest

from llmqueue.policies.retry import BackoffSettings, RetryDecision, retry_decide

BACKOFF = BackoffSettings(base=2.0, cap=60.0, retry_after_cap=300.0)


class Edge(random.Random):
    """A jitter that always lands on one edge of its window (low: 0; high: the window)."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def decide(
    outcome: str = "retry",
    *,
    attempt: int = 1,
    max_attempts: int = 5,
    spent: bool = True,
    retry_after: float | None = None,
    high: bool = True,
) -> RetryDecision:
    return retry_decide(
        outcome=outcome,
        spent=spent,
        attempt=attempt,
        max_attempts=max_attempts,
        error="HTTP 503",
        retry_after=retry_after,
        backoff=BACKOFF,
        rng=Edge(high),
    )


def test_a_success_completes_whatever_the_attempt():
    assert decide("success", attempt=5, max_attempts=5) == RetryDecision("complete")


def test_the_attempt_before_the_last_retries_later_after_its_backoff_window():
    d = decide(attempt=4, max_attempts=5)
    # the window doubles from base for each attempt made, up to the cap: 2 * 2**3 = 16
    assert d == RetryDecision("retry_later", 16.0, "HTTP 503")
    assert decide(attempt=4, max_attempts=5, high=False).delay == 0.0


def test_the_window_stops_at_the_cap():
    assert decide(attempt=9, max_attempts=10).delay == BACKOFF.cap


def test_the_last_attempt_spent_dead_letters_with_the_count_and_the_last_error():
    d = decide(attempt=5, max_attempts=5)
    assert d == RetryDecision("dead_letter", 0.0, "gave up after 5 attempts; last error: HTTP 503")


def test_an_attempt_not_spent_is_given_back_even_at_the_last_attempt():
    d = decide(attempt=5, max_attempts=5, spent=False, retry_after=7.0, high=False)
    assert d == RetryDecision("refund", 7.0, "HTTP 503")


def test_an_attempt_not_spent_before_the_last_is_given_back_too():
    assert decide(attempt=1, spent=False).action == "refund"


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(30.0, 30.0), (299.0, 299.0), (300.0, 300.0), (301.0, 300.0), (10_000.0, 300.0)],
)
def test_a_429s_retry_after_is_a_floor_up_to_its_cap(retry_after, expected):
    # the low edge of the jitter: the delay is the Retry-After alone, cut to the cap
    d = decide(attempt=1, spent=False, retry_after=retry_after, high=False)
    assert d.action == "refund"
    assert d.delay == expected


def test_a_retry_after_below_the_backoff_window_leaves_the_window():
    d = decide(attempt=6, max_attempts=10, retry_after=1.0)
    assert d.delay == BACKOFF.cap


def test_a_rejected_request_dead_letters_on_its_first_attempt_with_its_own_error():
    d = retry_decide(
        outcome="rejected",
        spent=True,
        attempt=1,
        max_attempts=5,
        error="HTTP 400: bad input",
        retry_after=None,
        backoff=BACKOFF,
    )
    assert d == RetryDecision("dead_letter", 0.0, "HTTP 400: bad input")
