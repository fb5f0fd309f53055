"""Retry delays: exponential backoff with full jitter.

``delay = random(0, min(cap, base * 2**attempt))`` ("full jitter", from the AWS Architecture
Blog's *Exponential Backoff and Jitter*): retries of many jobs that failed together spread over
the whole window instead of arriving as a second wave. A ``Retry-After`` from the upstream is a
floor: we never come back sooner than it asks.
"""

from __future__ import annotations

import random


def backoff_delay(
    *,
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_cap: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt; ``attempt`` counts the attempts made (1 = first)."""
    exponent = max(attempt - 1, 0)
    # 2**exponent overflows a float long after it passes any sane cap: stop doubling there.
    window = cap if exponent >= 64 else min(cap, base * (2**exponent))
    delay = (rng or random).uniform(0, window)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay
