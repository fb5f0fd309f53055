"""Token buckets: how fast jobs may go to an endpoint, for a user, or for the whole queue.

A bucket holds up to ``capacity`` tokens and gains ``refill_per_s`` of them every second. A
call that costs ``cost`` goes ahead only if the bucket holds that many, and takes them; so
over any stretch of ``t`` seconds no more than ``capacity + refill_per_s * t`` is admitted:
the capacity is the burst, the rate is the long-run pace. An endpoint's ``rpm_limit`` is a
bucket refilled at ``rpm_limit / 60`` per second that holds a few seconds of that refill
(``Bucket.per_minute``); its ``tpm_limit`` the same in LLM tokens, charged with
``estimate_tokens`` before the call and corrected with ``bucket_refund`` once the
response's ``usage`` tells the real count.

Unlike ``limits``, whose strategies talk to a storage, these are pure functions from a
``BucketState`` to the next one, over an explicit clock (``now``, seconds since the epoch).
The refill is computed lazily from ``updated_at``, so nothing ticks in the background. The
storage loads a state, decides, and writes the result back with a compare-and-set on
``version``; a refusal returns the state it was given, unchanged: nothing to write.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: completion tokens charged up front when a request names no max_tokens
DEFAULT_COMPLETION_TOKENS = 256

# Keys whose strings are not text the model reads as tokens: a base64 image would otherwise
# be charged as hundreds of thousands of tokens.
_NOT_TEXT = frozenset({"image_url", "input_audio", "file"})


@dataclass(frozen=True, slots=True)
class Bucket:
    """What a bucket may hold and how fast it fills: its limit, not its state."""

    capacity: float
    refill_per_s: float

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.refill_per_s < 0:
            raise ValueError("a bucket needs capacity > 0 and refill_per_s >= 0")

    @classmethod
    def per_minute(cls, limit: float, *, burst_s: float = 60.0) -> Bucket:
        """A limit of ``limit`` per minute that holds ``burst_s`` seconds of its refill.

        ``burst_s=60`` lets a whole minute's worth go in the first second; a few seconds
        spread it over the minute at the same long-run pace, so that no short window sees
        much more than its share (upstreams such as Azure OpenAI judge an RPM or TPM limit
        over 1 to 10 second windows and answer a burst with 429s). The bucket always holds
        at least one whole unit, or a slow limit (6 per minute, 1 s of burst) could never
        pay for a single request.
        """
        if burst_s <= 0:
            raise ValueError("burst_s must be > 0")
        rate = limit / 60.0
        return cls(capacity=min(float(limit), max(1.0, rate * burst_s)), refill_per_s=rate)


@dataclass(frozen=True, slots=True)
class BucketState:
    #: tokens held at ``updated_at``; below zero while a debt is carried
    tokens: float
    #: when ``tokens`` was true; in the future while the bucket is paused
    updated_at: float
    version: int = 0

    @classmethod
    def full(cls, spec: Bucket, now: float) -> BucketState:
        return cls(tokens=spec.capacity, updated_at=now)


def bucket_peek(state: BucketState, now: float, spec: Bucket) -> float:
    """Tokens the bucket holds at ``now`` (negative while paying off a debt or paused)."""
    return _refilled(state, now, spec)[0]


def bucket_take(
    state: BucketState, cost: float, now: float, spec: Bucket
) -> tuple[bool, BucketState, float]:
    """Take ``cost`` tokens if the bucket holds them: ``(ok, new_state, wait_s)``.

    Refused, ``wait_s`` is the time until the bucket will hold ``cost`` if nobody else takes
    from it: a lower bound to defer the job by, not a reservation. It is infinite when
    ``cost`` exceeds the capacity (no wait can ever pay it) or the bucket never refills.
    """
    if cost < 0:
        raise ValueError("cost must be >= 0")
    tokens, updated_at = _refilled(state, now, spec)
    if cost <= tokens:
        taken = dataclasses.replace(
            state, tokens=tokens - cost, updated_at=updated_at, version=state.version + 1
        )
        return True, taken, 0.0
    if cost > spec.capacity or spec.refill_per_s == 0:
        return False, state, math.inf
    # updated_at is past now while paused: the refill only starts then.
    return False, state, (updated_at - now) + (cost - tokens) / spec.refill_per_s


def bucket_refund(state: BucketState, amount: float, spec: Bucket) -> BucketState:
    """Give back ``amount`` tokens, or charge ``-amount`` more when it is negative.

    For reconciling an estimate with the real usage: charged 1,000 and used 300, refund
    700; used 1,400, refund -400. A charge may take the bucket below zero: the debt is
    carried, and later takes wait until the refill has paid it off. A refund never fills
    the bucket past its capacity.
    """
    if amount == 0:
        return state
    tokens = min(spec.capacity, state.tokens + amount)
    return dataclasses.replace(state, tokens=tokens, version=state.version + 1)


def bucket_pause(state: BucketState, until: float) -> BucketState:
    """Empty the bucket and hold it empty until ``until`` (an upstream 429's Retry-After).

    The refill starts again at ``until``, from zero (or from the debt still carried), so the
    endpoint that asked us to back off is eased back in at its rate, not hit with a burst.
    A pause never shortens one already in force.
    """
    tokens = min(state.tokens, 0.0)
    updated_at = max(state.updated_at, until)
    if tokens == state.tokens and updated_at == state.updated_at:
        return state
    return dataclasses.replace(
        state, tokens=tokens, updated_at=updated_at, version=state.version + 1
    )


def estimate_tokens(kind: str, payload: Mapping[str, Any]) -> int:
    """A cheap, pessimistic guess of the LLM tokens a request will use, prompt and answer.

    The prompt is a quarter token per character of its text (OpenAI's rule of thumb for
    English; token ids given as integers count one each). A chat or completion adds its
    answer's budget: ``max_completion_tokens`` or ``max_tokens`` (times ``n`` choices), or
    ``DEFAULT_COMPLETION_TOKENS``. An embedding has no answer to add.
    """
    if kind == "embedding":
        return _prompt_tokens(payload.get("input"))
    prompt = _prompt_tokens(payload.get("messages")) + _prompt_tokens(payload.get("prompt"))
    budget = _positive_int(payload.get("max_completion_tokens"))
    if budget is None:
        budget = _positive_int(payload.get("max_tokens"))
    if budget is None:
        budget = DEFAULT_COMPLETION_TOKENS
    return prompt + budget * (_positive_int(payload.get("n")) or 1)


def _refilled(state: BucketState, now: float, spec: Bucket) -> tuple[float, float]:
    """Tokens and their time after refilling up to ``now``; time never runs backwards.

    Clocks of different machines disagree a little: a state written by one slightly ahead
    is taken as it stands rather than un-refilled.
    """
    if now <= state.updated_at:
        return state.tokens, state.updated_at
    gained = (now - state.updated_at) * spec.refill_per_s
    return min(spec.capacity, state.tokens + gained), now


def _prompt_tokens(value: object) -> int:
    chars, ids = _count_text(value)
    return math.ceil(chars / 4) + ids


def _count_text(value: object) -> tuple[int, int]:
    """Characters of text and integer token ids anywhere in ``value``."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, bool):
        return 0, 0
    if isinstance(value, int):
        return 0, 1
    chars = ids = 0
    items: Iterable[object]
    if isinstance(value, Mapping):
        items = (v for k, v in value.items() if k not in _NOT_TEXT)
    elif isinstance(value, list | tuple):
        items = value
    else:
        return 0, 0
    for item in items:
        c, i = _count_text(item)
        chars += c
        ids += i
    return chars, ids


def _positive_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
