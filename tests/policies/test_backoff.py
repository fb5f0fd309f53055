import random

import pytest

from llmqueue.policies.backoff import backoff_delay


def test_window_doubles_per_attempt_up_to_the_cap():
    rng = random.Random(7)
    for attempt, window in [
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (4, 8.0),
        (5, 10.0),
        (40, 10.0),
        (500, 10.0),
    ]:
        delays = [backoff_delay(attempt=attempt, base=1.0, cap=10.0, rng=rng) for _ in range(2000)]
        assert min(delays) >= 0 and max(delays) <= window
        # full jitter: spread over the whole window, not bunched at its end
        assert max(delays) > 0.9 * window and min(delays) < 0.1 * window
        assert sum(delays) / len(delays) == pytest.approx(window / 2, rel=0.1)


def test_retry_after_is_a_floor_and_is_capped():
    rng = random.Random(1)
    assert backoff_delay(attempt=1, base=0.01, cap=0.02, retry_after=2.0, rng=rng) == 2.0
    assert (
        backoff_delay(attempt=1, base=0.01, cap=0.02, retry_after=9999, retry_after_cap=60, rng=rng)
        == 60
    )
    # a Retry-After shorter than the jittered delay does not shorten it
    assert backoff_delay(attempt=3, base=100, cap=100, retry_after=0.5, rng=random.Random(3)) > 0.5
