"""llmqueue's exceptions.

    LLMQueueError
     ├── TransitionError       a job was not in a state the transition starts from
     ├── SubmitError           a submission the queue refuses (beyond field validation)
     │    ├── ModelNotServed   no enabled endpoint serves the payload's model
     │    └── OverLimit        the owner is over a rate limit or quota (API: 429)
     │    └── BatchInvalid     a Batch API request's own fields are wrong (by field)
     ├── BatchStateError       a batch was not in a state the action starts from
     ├── EndpointInvalid       an endpoint's settings break a rule (by field)
     └── ConfigurationError    a setting that cannot work

Upstream failures are not exceptions here: ``llmqueue.calls.client`` classifies every call into a
``CallResult`` once, and the drain, breaker and buckets read that classification.
"""

from __future__ import annotations

import math


class LLMQueueError(Exception):
    """Base of every llmqueue error."""


class TransitionError(LLMQueueError):
    """A guarded job transition matched no row: the job was not in an allowed state."""

    def __init__(self, job_id: int, action: str, status: str | None) -> None:
        self.job_id = job_id
        self.action = action
        self.status = status
        super().__init__(f"cannot {action} job {job_id}: it is {status or 'gone'}")


class SubmitError(LLMQueueError):
    """A submission refused for a reason that is not one field's format."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ModelNotServed(SubmitError):
    def __init__(self, model: str, served: list[str]) -> None:
        listed = ", ".join(served) if served else "none"
        super().__init__(
            "payload.model",
            f"no enabled endpoint serves model {model!r}; served models: {listed}",
        )
        self.served = served


class OverLimit(SubmitError):
    """A submission over one of its owner's limits or quotas."""

    def __init__(
        self, limit_name: str, *, limit: int, remaining: int, retry_after: float, reset: float
    ) -> None:
        self.limit_name = limit_name
        self.limit = limit
        self.remaining = remaining
        self.retry_after = max(1, math.ceil(retry_after))
        self.reset = max(0, math.ceil(reset))
        super().__init__(
            limit_name,
            f"over your limit of {limit} ({limit_name.replace('_', ' ')}); "
            f"it frees in {self.retry_after} s",
        )


class BatchInvalid(SubmitError):
    """A Batch API request (its input file, endpoint or completion window) that cannot be."""


class BatchStateError(LLMQueueError):
    """A batch action matched no row: the batch was not in a state the action starts from."""

    def __init__(self, batch_id: int, action: str, status: str | None) -> None:
        self.batch_id = batch_id
        self.action = action
        self.status = status
        super().__init__(f"cannot {action} batch {batch_id}: it is {status or 'gone'}")


class EndpointInvalid(LLMQueueError):
    """Settings of an endpoint that ``llmqueue.endpoints.service`` refuses, by field name."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {', '.join(r)}" for f, r in problems.items()))


class ConfigurationError(LLMQueueError):
    """A setting that cannot work."""
