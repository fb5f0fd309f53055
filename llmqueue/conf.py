"""llmqueue's settings: one typed place, with defaults.

Each setting is read, in order, from the Django setting ``LLMQUEUE`` (a dict), then from the
environment variable ``LLMQUEUE_<NAME>``, then the default below. ``llmqueue.checks`` reports
values that cannot work.

    from llmqueue.conf import conf
    conf.MAX_ATTEMPTS
"""

from __future__ import annotations

import dataclasses
import difflib
import json
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
    DRAIN_POLL_S: float = 0.1
    #: on shutdown, how long a drain lets its calls finish before it cuts them off and requeues
    STOP_GRACE_S: float = 10.0
    #: a claimed job is someone else's to take after this long without a renewal
    LEASE_S: float = 30.0
    #: how often a drain renews its leases and its slot (must be well under LEASE_S)
    HEARTBEAT_S: float = 5.0
    #: a drain slot whose heartbeat is older than this is free again
    SLOT_STALE_S: float = 20.0
    #: the name this host's drain slots go by (empty: the machine's host name). Two workers
    #: on one machine with different names take their own slots, as two machines would.
    HOST_NAME: str = ""
    #: default upstream timeout when an endpoint sets none, seconds
    UPSTREAM_TIMEOUT_S: float = 120.0
    #: the longest GET /api/jobs/{id}/?wait=N may hold
    MAX_WAIT_S: float = 60.0
    #: how often a web process asks which of its waited-for jobs ended (one query for all of
    #: them, llmqueue.jobs.waiting), seconds: a waiter learns of its job this much late at most
    WAIT_POLL_S: float = 0.2
    #: the longest a /v1 call waits for its job before it answers 504 with the job id (and
    #: no longer than the client's own x-stainless-read-timeout), seconds
    V1_MAX_WAIT_S: float = 600.0
    #: wrong API keys one address may send per window before it is answered 429
    KEY_FAILURES_PER_WINDOW: int = 20
    #: that window, seconds (also the Retry-After of the 429)
    KEY_FAILURE_WINDOW_S: int = 300
    #: /readyz answers 503 when no qcluster showed a heartbeat for this long, seconds (the
    #: housekeeping schedule moves on every minute; drains and the health checker beat often)
    READY_HEARTBEAT_S: float = 150.0
    #: the most lines (jobs) one JSONL batch upload may hold; all are queued in one transaction
    BATCH_MAX_LINES: int = 50000
    #: the largest file the Files API takes (a batch's input), bytes
    FILE_MAX_BYTES: int = 200 * 1024 * 1024
    #: calls per second to all endpoints together (0: no limit), with this burst (0: one
    #: second's worth)
    GLOBAL_RPS: float = 0.0
    GLOBAL_BURST: float = 0.0
    #: seconds of refill an endpoint's rpm_limit bucket and a user's requests_per_minute bucket
    #: may hold: the most that goes at once after a quiet spell. 1 s: a limit of 600 per minute
    #: sends at most 10 at once and 10 a second after, so the worst 1 s window holds twice
    #: its share and the worst 10 s window 1.1 times (Azure OpenAI judges RPM over 1-10 s
    #: windows); the long-run pace is the limit whatever the burst. 60 restores the old
    #: whole-minute burst.
    LIMIT_BURST_S: float = 1.0
    #: the same for the tokens-per-minute buckets. A minute by default: a bucket must hold a
    #: large request whole (a charge is capped at the capacity), and token limits are
    #: usually large next to one request; lower it for upstreams that judge TPM in seconds.
    LIMIT_TOKENS_BURST_S: float = 60.0
    #: how a model's jobs are spread over its endpoints: weighted_round_robin, round_robin,
    #: least_in_flight or latency (llmqueue.policies.balancer)
    BALANCER: str = "weighted_round_robin"
    #: per-model strategy, e.g. {"llama-3-8b": "latency"} (env: a JSON object)
    BALANCER_BY_MODEL: dict = dataclasses.field(default_factory=dict)
    #: how fast an endpoint's failure share forgets, seconds
    STATS_TAU_S: float = 30.0
    #: how fast its peak-EWMA latency forgets a slow call (and fades while it gets no calls)
    LATENCY_TAU_S: float = 10.0
    #: circuit breaker (llmqueue.policies.breaker): open after this many failures in a row...
    BREAKER_FAILURES: int = 5
    #: ...or this failure share over the last BREAKER_WINDOW calls (once that many were seen)
    BREAKER_FAILURE_RATE: float = 0.5
    BREAKER_WINDOW: int = 20
    #: open for this long, doubling on each re-open up to the cap, seconds
    BREAKER_OPEN_S: float = 10.0
    BREAKER_OPEN_CAP_S: float = 300.0
    #: half open: this many probe calls across the fleet; that many successes close it
    BREAKER_PROBES: int = 1
    #: a probe that never reported after this long is presumed lost and granted again
    BREAKER_PROBE_TIMEOUT_S: float = 180.0
    #: active health checks: GET {base_url}/models every HEALTH_INTERVAL_S...
    HEALTH_INTERVAL_S: float = 5.0
    HEALTH_TIMEOUT_S: float = 3.0
    #: ...unhealthy after this many failed checks in a row, healthy after this many good ones
    HEALTH_UNHEALTHY_AFTER: int = 2
    HEALTH_HEALTHY_AFTER: int = 1
    #: the response cache (llmqueue.cache) for every job; a job's "cache": false skips it alone
    CACHE_ENABLED: bool = True
    #: how long a cached answer is served, seconds; a job's cache_ttl may only shorten it
    CACHE_TTL_S: int = 86400
    #: models whose answers are not private: one cache for all users ("*": every model).
    #: Comma separated (env), or a list. Every other model's answers go only to their owner.
    CACHE_SHARED_MODELS: str = ""
    #: the database level's bounds; above either, least recently used entries are evicted
    CACHE_MAX_ENTRIES: int = 100000
    CACHE_MAX_BYTES: int = 1024 * 1024 * 1024
    #: how often a process checks those bounds and deletes expired entries, seconds
    CACHE_EVICT_INTERVAL_S: float = 30.0
    #: each process's in-memory level: entries and bytes
    CACHE_L1_MAX_ENTRIES: int = 1000
    CACHE_L1_MAX_BYTES: int = 64 * 1024 * 1024
    #: micro-batching (llmqueue.worker.batching): embedding jobs with the same endpoint, model
    #: and parameters, each with one input, go to the endpoint together as one call of up to
    #: EMBED_BATCH_MAX inputs, after at most EMBED_BATCH_WAIT_MS for the batch to fill.
    #: EMBED_BATCHING=false or EMBED_BATCH_MAX=1 turns it off (one call per job)
    EMBED_BATCHING: bool = True
    EMBED_BATCH_MAX: int = 64
    EMBED_BATCH_WAIT_MS: float = 20.0
    #: serve the built-in OpenAI-compatible echo under /demo/v1 (make run turns it on)
    DEMO_ENDPOINT: bool = False
    #: finished jobs (succeeded, cancelled...) and their attempts are deleted this many days
    #: after they finished (0: kept forever); lifetime totals outlive them (llmqueue.jobs.totals)
    RETENTION_DAYS: int = 30
    #: the same for dead letters, which wait for an operator: longer by default
    DEAD_RETENTION_DAYS: int = 90
    #: a directory: deleted jobs are appended there first as JSON lines, one file a day
    #: (jobs-YYYY-MM-DD.jsonl, the day of deletion). Empty: not archived
    RETENTION_ARCHIVE_DIR: str = ""
    #: jobs deleted per transaction (short ones: SQLite writers and drains take turns)...
    RETENTION_BATCH: int = 1000
    #: ...and for at most this long per housekeeping run (every minute); a backlog of
    #: millions is worked off over runs
    RETENTION_RUN_S: float = 10.0
    #: Fernet keys for secrets at rest (endpoint API keys), comma separated: the first
    #: encrypts, all decrypt. Unset: one derived from SECRET_KEY (development only: changing
    #: SECRET_KEY then loses the stored keys). llmqueue.db.fields
    FIELD_KEYS: str = ""


_FIELDS = {f.name: f for f in dataclasses.fields(Defaults)}


def _parse(raw: str, kind: Any) -> Any:
    if kind is dict or kind == "dict":
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {raw!r}")
        return value
    if kind is bool or kind == "bool":
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(f"{raw!r} is not a boolean")
        return value in _TRUE
    if kind is int or kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if kind is float or kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    return raw


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_KIND_HINTS = {
    "bool": "Use 1/true/yes/on or 0/false/no/off.",
    "int": "A whole number",
    "float": "A number",
    "dict": "A JSON object",
}


@dataclasses.dataclass(frozen=True)
class SettingProblem:
    """A setting llmqueue cannot use: where it came from, and what to do."""

    name: str
    reason: str
    hint: str
    unknown: bool = False


def _nearest(name: str, known: list[str]) -> str:
    # A typo (CONCURENCY) is one or two letters off its name: difflib finds it.
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f"Did you mean {match[0]}?" if match else "See llmqueue/conf.py for the names."


def settings_problems() -> list[SettingProblem]:
    """Every ``LLMQUEUE_*`` environment variable that llmqueue does not know or cannot parse,
    and every unknown key of the ``LLMQUEUE`` Django setting. ``llmqueue.checks`` reports
    them: a misspelled name must not be silently ignored, nor ``ture`` silently be False."""
    problems: list[SettingProblem] = []
    env_known = [f"LLMQUEUE_{name}" for name in _FIELDS]
    for env_name, raw in sorted(os.environ.items()):
        if not env_name.startswith("LLMQUEUE_"):
            continue
        field = _FIELDS.get(env_name.removeprefix("LLMQUEUE_"))
        if field is None:
            reason = f"{env_name} is not an llmqueue setting"
            problems.append(SettingProblem(env_name, reason, _nearest(env_name, env_known), True))
            continue
        try:
            _parse(raw, field.type)
        except ValueError as exc:
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            hint = _KIND_HINTS.get(kind, "")
            if kind in ("int", "float"):
                hint += f", e.g. {field.default}."
            problems.append(SettingProblem(env_name, f"{env_name}={raw!r}: {exc}", hint))
    for key in getattr(settings, "LLMQUEUE", None) or {}:
        if key not in _FIELDS:
            reason = f"LLMQUEUE[{key!r}] is not an llmqueue setting"
            problems.append(SettingProblem(key, reason, _nearest(key, list(_FIELDS)), True))
    return problems


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
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return field.default

    def names(self) -> list[str]:
        return list(_FIELDS)


conf = Conf()
