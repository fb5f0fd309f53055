"""llmqueue's exceptions.

    LLMQueueError
     ├── TransitionError       a job was not in a state the transition starts from
     ├── SubmitError           a submission the queue refuses (beyond field validation)
     │    └── ModelNotServed   no enabled endpoint serves the payload's model
     └── ConfigurationError    a setting that cannot work

Upstream failures are not exceptions here: ``llmqueue.upstream`` classifies every call into a
``CallResult`` once, and the drain, breaker and buckets read that classification.
"""

from __future__ import annotations


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


class ConfigurationError(LLMQueueError):
    """A setting that cannot work."""
