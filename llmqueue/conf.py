"""llmqueue's settings: one typed place, with defaults.

Each setting is read, in order, from the Django setting ``LLMQUEUE`` (a dict), then from the
environment variable ``LLMQUEUE_<NAME>``, then the default below. ``llmqueue.checks`` reports
values that cannot work.

    from llmqueue.conf import conf
    conf.MAX_ATTEMPTS
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from django.conf import settings


@dataclasses.dataclass(frozen=True)
class Defaults:
    #: attempts a job gets unless it asks for another number
    MAX_ATTEMPTS: int = 5
    #: ceiling on a job's own max_attempts
    MAX_ATTEMPTS_LIMIT: int = 20
    #: retry delay: random(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
    BACKOFF_BASE_S: float = 1.0
    BACKOFF_CAP_S: float = 300.0
    #: ceiling on a Retry-After we honor; a larger one is clipped to it
    RETRY_AFTER_CAP_S: float = 3600.0
    #: largest accepted job payload (serialized JSON), bytes -> 413 above it
    MAX_PAYLOAD_BYTES: int = 1024 * 1024
    #: largest bulk submission, jobs
    MAX_BULK_JOBS: int = 1000
    #: upstream calls in flight in one drain (one worker process)
    DRAIN_CONCURRENCY: int = 64
    #: drain processes per host; the cluster gets one more worker for housekeeping
    DRAINS_PER_HOST: int = 2
    #: a drain hands over to a fresh task after this long (keeps django-q2 timeouts sane)
    DRAIN_MAX_SECONDS: float = 300.0
    #: a drain with nothing in flight and nothing due exits after this long
    DRAIN_LINGER_S: float = 5.0
    #: poll interval of a drain that has room but found nothing due
    DRAIN_POLL_S: float = 0.25
    #: on shutdown, how long a drain lets its calls finish before it cuts them off and requeues
    STOP_GRACE_S: float = 10.0
    #: a claimed job is someone else's to take after this long without a renewal
    LEASE_S: float = 30.0
    #: how often a drain renews its leases and its slot (must be well under LEASE_S)
    HEARTBEAT_S: float = 5.0
    #: a drain slot whose heartbeat is older than this is free again
    SLOT_STALE_S: float = 20.0
    #: default upstream timeout when an endpoint sets none, seconds
    UPSTREAM_TIMEOUT_S: float = 120.0
    #: the longest GET /api/jobs/{id}/?wait=N may hold
    MAX_WAIT_S: float = 60.0
    #: serve the built-in OpenAI-compatible echo under /demo/v1 (make run turns it on)
    DEMO_ENDPOINT: bool = False


_FIELDS = {f.name: f for f in dataclasses.fields(Defaults)}


def _parse(raw: str, kind: Any) -> Any:
    if kind is bool or kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int or kind == "int":
        return int(raw)
    if kind is float or kind == "float":
        return float(raw)
    return raw


class Conf:
    """Attribute access to the settings; values are read on each access (tests override them)."""

    def __getattr__(self, name: str) -> Any:
        field = _FIELDS.get(name)
        if field is None:
            raise AttributeError(name)
        overrides = getattr(settings, "LLMQUEUE", {}) or {}
        if name in overrides:
            return overrides[name]
        if name == "DRAINS_PER_HOST" and hasattr(settings, "LLMQUEUE_DRAINS_PER_HOST"):
            return settings.LLMQUEUE_DRAINS_PER_HOST
        raw = os.environ.get(f"LLMQUEUE_{name}")
        if raw is not None:
            return _parse(raw, field.type)
        return field.default

    def names(self) -> list[str]:
        return list(_FIELDS)


conf = Conf()
