"""System checks for llmqueue settings: a wrong value is named, with a hint, at startup."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from llmqueue.conf import conf, settings_problems
from llmqueue.db.fields import FieldKeyError, field_fernet
from llmqueue.endpoints.pools import breaker_settings
from llmqueue.policies.balancer import STRATEGIES

#: each rule: its code, what must hold of the parsed settings ``v``, the message and a hint
RULES: list[tuple[str, Callable[[dict[str, Any]], bool], str, str]] = [
    (
        "E030",
        lambda v: v["RETENTION_DAYS"] >= 0 and v["DEAD_RETENTION_DAYS"] >= 0,
        "LLMQUEUE RETENTION_DAYS and DEAD_RETENTION_DAYS must be >= 0 (days).",
        "Use 30 and 90; 0 keeps those jobs forever.",
    ),
    (
        "E031",
        lambda v: 1 <= v["RETENTION_BATCH"] <= 10000 and v["RETENTION_RUN_S"] > 0,
        "LLMQUEUE RETENTION_BATCH must be between 1 and 10000, RETENTION_RUN_S > 0 seconds.",
        "Use 1000 and 10: short transactions, a bounded share of each minute.",
    ),
    (
        "E001",
        lambda v: v["MAX_ATTEMPTS"] >= 1,
        "LLMQUEUE MAX_ATTEMPTS must be at least 1.",
        "Use 5.",
    ),
    (
        "E002",
        lambda v: 1 <= v["MAX_ATTEMPTS"] <= v["MAX_ATTEMPTS_LIMIT"],
        "LLMQUEUE MAX_ATTEMPTS must not exceed MAX_ATTEMPTS_LIMIT.",
        "Raise MAX_ATTEMPTS_LIMIT or lower MAX_ATTEMPTS.",
    ),
    (
        "E003",
        lambda v: 0 < v["BACKOFF_BASE_S"] <= v["BACKOFF_CAP_S"],
        "LLMQUEUE BACKOFF_BASE_S must be positive and at most BACKOFF_CAP_S.",
        "For example BACKOFF_BASE_S=1, BACKOFF_CAP_S=300.",
    ),
    (
        "E004",
        lambda v: v["DRAIN_CONCURRENCY"] >= 1,
        "LLMQUEUE DRAIN_CONCURRENCY must be >= 1.",
        "Use 64.",
    ),
    (
        "E005",
        lambda v: v["DRAINS_PER_HOST"] >= 1,
        "LLMQUEUE DRAINS_PER_HOST must be >= 1.",
        "Use 2.",
    ),
    (
        "E006",
        lambda v: v["HEARTBEAT_S"] * 3 <= v["LEASE_S"],
        "LLMQUEUE HEARTBEAT_S must be at most a third of LEASE_S.",
        "A drain renews its leases every HEARTBEAT_S; a lease must survive a missed renewal.",
    ),
    (
        "E007",
        lambda v: v["HEARTBEAT_S"] * 2 <= v["SLOT_STALE_S"],
        "LLMQUEUE HEARTBEAT_S must be at most half of SLOT_STALE_S.",
        "Otherwise a live drain's slot looks abandoned between two heartbeats.",
    ),
    (
        "E008",
        lambda v: v["MAX_PAYLOAD_BYTES"] >= 1024,
        "LLMQUEUE MAX_PAYLOAD_BYTES is too small.",
        "Use 1048576.",
    ),
    (
        "E009",
        lambda v: 1 <= v["MAX_BULK_JOBS"] <= 10000,
        "LLMQUEUE MAX_BULK_JOBS must be between 1 and 10000.",
        "Use 1000.",
    ),
    (
        "E010",
        lambda v: (
            v["BALANCER"] in STRATEGIES
            and all(v in STRATEGIES for v in (v["BALANCER_BY_MODEL"] or {}).values())
        ),
        "LLMQUEUE BALANCER and BALANCER_BY_MODEL must name known strategies.",
        f"Known: {', '.join(sorted(STRATEGIES))}.",
    ),
    (
        "E012",
        lambda v: v["BREAKER_PROBE_TIMEOUT_S"] > v["UPSTREAM_TIMEOUT_S"],
        "LLMQUEUE BREAKER_PROBE_TIMEOUT_S must exceed UPSTREAM_TIMEOUT_S.",
        "A probe still waiting for its answer would otherwise be taken for lost.",
    ),
    (
        "E013",
        lambda v: (
            v["HEALTH_INTERVAL_S"] > 0
            and v["HEALTH_TIMEOUT_S"] > 0
            and v["HEALTH_UNHEALTHY_AFTER"] >= 1
            and v["HEALTH_HEALTHY_AFTER"] >= 1
        ),
        "LLMQUEUE HEALTH_* settings cannot work.",
        "Interval and timeout > 0 seconds, thresholds >= 1.",
    ),
    (
        "E018",
        lambda v: v["LIMIT_BURST_S"] > 0 and v["LIMIT_TOKENS_BURST_S"] > 0,
        "LLMQUEUE LIMIT_BURST_S and LIMIT_TOKENS_BURST_S must be > 0 seconds.",
        "Use 1 and 60 (at most 60: a bucket never holds more than its minute).",
    ),
    (
        "E019",
        lambda v: v["KEY_FAILURES_PER_WINDOW"] >= 1 and v["KEY_FAILURE_WINDOW_S"] >= 1,
        "LLMQUEUE KEY_FAILURES_PER_WINDOW and KEY_FAILURE_WINDOW_S must be at least 1.",
        "Use 20 wrong keys per 300 seconds.",
    ),
    (
        "E020",
        lambda v: 1 <= v["EMBED_BATCH_MAX"] <= 2048 and 0 <= v["EMBED_BATCH_WAIT_MS"] <= 10000,
        "LLMQUEUE EMBED_BATCH_MAX must be 1-2048 and EMBED_BATCH_WAIT_MS 0-10000.",
        "Use 64 and 20 (2048 inputs is OpenAI's limit per call); EMBED_BATCHING=false turns "
        "merging off.",
    ),
]


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = _field_keys()
    unusable = _unusable_settings()
    if unusable:
        return errors + unusable  # the rules below need every value parsed
    try:
        values = {name: getattr(conf, name) for name in conf.names()}
    except (TypeError, ValueError) as exc:
        return [Error(f"an LLMQUEUE_* setting cannot be parsed: {exc}", id="llmqueue.E000")]
    for code, holds, message, hint in RULES:
        if not holds(values):
            errors.append(Error(message, hint=hint, id=f"llmqueue.{code}"))
    try:
        breaker_settings()
    except ValueError as exc:
        errors.append(
            Error(
                f"LLMQUEUE BREAKER_* settings: {exc}",
                hint="Defaults: 5 failures, rate 0.5 over 20 calls, open 10-300 s, 1 probe.",
                id="llmqueue.E011",
            )
        )
    errors += _retention_archive(values["RETENTION_ARCHIVE_DIR"])
    return errors


def _retention_archive(archive: str) -> list[Error]:
    """E032: the retention archive's directory (if any) must be writable."""
    if not archive or (os.path.isdir(archive) and os.access(archive, os.W_OK)):
        return []
    return [
        Error(
            f"LLMQUEUE RETENTION_ARCHIVE_DIR {archive!r} is not a writable directory.",
            hint="Create it, or leave it empty to delete without archiving.",
            id="llmqueue.E032",
        )
    ]


def _field_keys() -> list[Error]:
    """E017: the keys that encrypt endpoint API keys at rest cannot be used."""
    try:
        field_fernet()
    except FieldKeyError as exc:
        hint = (
            'Generate one with python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        )
        return [Error(str(exc), hint=hint, id="llmqueue.E017")]
    return []


def _unusable_settings() -> list[Error]:
    """E014: an LLMQUEUE_* name (or LLMQUEUE key) llmqueue does not know, with the nearest
    known name; E015: an LLMQUEUE_* value that does not parse; E016: an environment switch of
    project/settings.py (DEBUG, HTTPS, ...) that does not parse. Each names the variable."""
    errors: list[Error] = []
    seen: set[str] = set()
    for p in settings_problems():
        seen.add(p.name)
        errors.append(
            Error(p.reason, hint=p.hint, id="llmqueue.E014" if p.unknown else "llmqueue.E015")
        )
    for p in getattr(settings, "ENV_ERRORS", None) or ():
        if p.name in seen:  # LLMQUEUE_DRAINS_PER_HOST is read by both: say it once
            continue
        errors.append(Error(f"{p.name}={p.value!r}: {p.reason}", hint=p.hint, id="llmqueue.E016"))
    return errors
