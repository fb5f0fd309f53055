"""What a finished call means for its job: complete it, retry it later, give its attempt back,
or dead-letter it. Pure: plain values in, a decision out (``llmqueue.jobs.claims`` applies it).

    success                                   -> complete
    retry, attempt not spent                  -> refund      (after a backoff; even the last)
    retry, spent, attempts left               -> retry_later (after a backoff)
    retry, spent, none left                   -> dead_letter ("gave up after N attempts; ...")
    rejected (a 4xx: the request's fault)     -> dead_letter (its error as it is)

An attempt is not spent when the job was not at fault and its endpoint is held back instead
(connection refused, 429): then it costs the job nothing, however many it has had.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from llmqueue.policies.backoff import backoff_delay

Action = Literal["complete", "retry_later", "refund", "dead_letter"]


@dataclasses.dataclass(frozen=True)
class BackoffSettings:
    base: float
    cap: float
    #: the longest Retry-After honoured (a longer one is cut to this)
    retry_after_cap: float = 3600.0


@dataclasses.dataclass(frozen=True)
class RetryDecision:
    #: the transition to apply (``llmqueue.jobs.transitions.TRANSITIONS``)
    action: Action
    #: seconds before the job is due again (retry_later, refund)
    delay: float = 0.0
    #: the job's error text
    error: str = ""


def retry_decide(
    *,
    outcome: str,
    spent: bool,
    attempt: int,
    max_attempts: int,
    error: str,
    retry_after: float | None,
    backoff: BackoffSettings,
    rng: random.Random | None = None,
) -> RetryDecision:
    """The next step of a job whose call ended with ``outcome`` (``models.Outcome``: success,
    retry, rejected); ``attempt`` counts the attempts made, this one included (1 = first)."""
    if outcome == "success":
        return RetryDecision("complete")
    if outcome == "retry":
        if not spent or attempt < max_attempts:
            delay = backoff_delay(
                attempt=attempt,
                base=backoff.base,
                cap=backoff.cap,
                retry_after=retry_after,
                retry_after_cap=backoff.retry_after_cap,
                rng=rng,
            )
            return RetryDecision("retry_later" if spent else "refund", delay, error)
        return RetryDecision(
            "dead_letter", error=f"gave up after {attempt} attempts; last error: {error}"
        )
    return RetryDecision("dead_letter", error=error)
