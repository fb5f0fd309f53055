"""What a call to an endpoint takes and gives: the ground floor that every layer shares.

    CallRequest(kind, payload, target)  --calls.client-->  CallResult(outcome, status, body, ...)

The client knows nothing of jobs, claims or leases: the drain pairs each result with the claim
it made the request for, the job service records it, and the endpoint and limit policies learn
from the same typed result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from llmqueue.models import Outcome


@dataclasses.dataclass(frozen=True)
class Target:
    """What a call needs of an endpoint (a snapshot: the row may change meanwhile)."""

    id: int
    name: str
    base_url: str
    api_key: str
    timeout_s: float


class CallOutcome(enum.StrEnum):
    """What a call says about its endpoint's health (the breaker's input)."""

    #: a 2xx: the endpoint works
    SUCCESS = "success"
    #: connect error, timeout, 5xx: the endpoint is at fault
    FAILURE = "failure"
    #: 429 or another 4xx: says nothing about the endpoint's health
    NEUTRAL = "neutral"


def outcome_for_status(http_status: int | None) -> CallOutcome:
    """The breaker's view of a call; ``None`` means no HTTP answer (connect error, timeout)."""
    if http_status is None or http_status >= 500:
        return CallOutcome.FAILURE
    if 200 <= http_status < 300:
        return CallOutcome.SUCCESS
    return CallOutcome.NEUTRAL


@dataclasses.dataclass(frozen=True)
class CallRequest:
    """One OpenAI-compatible request: ``kind`` picks the path (``llmqueue.models.Kind``)."""

    kind: str
    payload: dict[str, Any]
    target: Target


@dataclasses.dataclass(frozen=True)
class CallResult:
    """The outcome of one call, classified once (``llmqueue.calls.client``):

    success    2xx with a JSON body
    retry      connect error, timeout, 5xx, 429 (with its Retry-After), non-JSON 2xx
    rejected   any other 4xx: the request's own fault, retrying cannot help
    """

    target: Target
    started_at: dt.datetime
    duration_ms: float
    outcome: Outcome
    http_status: int | None = None
    body: Any = None
    error: str = ""
    retry_after: float | None = None
    #: what the call says about the endpoint (its breaker's input); None: nothing
    health: CallOutcome | None = None
    #: False when the job is not at fault and the endpoint will be held back instead: the
    #: request never reached it (connection refused; its breaker stops the calls), or it
    #: said 429 (it is paused): the job's attempt is given back
    spent: bool = True
    #: pause the endpoint this long (a 429's Retry-After, or rate-limit headers at zero)
    pause_s: float | None = None

    @classmethod
    def worker_error(cls, target: Target, exc: BaseException) -> CallResult:
        """A call that failed inside the worker (a bug): it costs an attempt, never the job."""
        return cls(
            target=target,
            started_at=dt.datetime.now(dt.UTC),
            duration_ms=0.0,
            outcome=Outcome.RETRY,
            error=f"worker error: {type(exc).__name__}: {exc}"[:2000],
        )
