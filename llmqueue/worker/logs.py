"""What the worker logs about a job's attempt: one line per call, with its fields for
structured logs (``LOG_FORMAT=json``)."""

from __future__ import annotations

import logging

from llmqueue.jobs import AttemptResult
from llmqueue.models import Outcome

log = logging.getLogger(__name__)


def attempt_log(result: AttemptResult) -> None:
    """One line per call, its job, endpoint and outcome as fields (``LOG_FORMAT=json``): a
    success at DEBUG (a busy fleet makes thousands a second), a retry or rejection at INFO.
    Never the request's headers, so never the endpoint's key."""
    claim, call = result.claim, result.call
    log.log(
        logging.DEBUG if call.outcome == Outcome.SUCCESS else logging.INFO,
        "job %s attempt %d on %s: %s%s",
        claim.job_id,
        claim.attempt,
        claim.target.name,
        call.outcome,
        f" ({call.error})" if call.error else "",
        extra={
            "job_id": claim.job_id,
            "endpoint": claim.target.name,
            "model": claim.model,
            "outcome": str(call.outcome),
            "attempt": claim.attempt,
            "http_status": call.http_status,
            "duration_ms": round(call.duration_ms, 1),
        },
    )
