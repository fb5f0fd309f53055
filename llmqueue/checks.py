"""System checks for llmqueue settings: a wrong value is named, with a hint, at startup."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from llmqueue.conf import conf, settings_problems
from llmqueue.db.fields import FieldKeyError, field_fernet
from llmqueue.endpoints.pools import breaker_settings
from llmqueue.policies.balancer import STRATEGIES


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []

    def need(ok: bool, code: str, msg: str, hint: str) -> None:
        if not ok:
            errors.append(Error(msg, hint=hint, id=f"llmqueue.{code}"))

    try:
        field_fernet()
    except FieldKeyError as exc:
        errors.append(
            Error(
                str(exc),
                hint='Generate one with python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"',
                id="llmqueue.E017",
            )
        )
    unusable = _unusable_settings()
    if unusable:
        return errors + unusable  # the checks below need every value parsed
    try:
        values = {name: getattr(conf, name) for name in conf.names()}
    except (TypeError, ValueError) as exc:
        return [Error(f"an LLMQUEUE_* setting cannot be parsed: {exc}", id="llmqueue.E000")]
    need(values["MAX_ATTEMPTS"] >= 1, "E001", "LLMQUEUE MAX_ATTEMPTS must be at least 1.", "Use 5.")
    need(
        1 <= values["MAX_ATTEMPTS"] <= values["MAX_ATTEMPTS_LIMIT"],
        "E002",
        "LLMQUEUE MAX_ATTEMPTS must not exceed MAX_ATTEMPTS_LIMIT.",
        "Raise MAX_ATTEMPTS_LIMIT or lower MAX_ATTEMPTS.",
    )
    need(
        0 < values["BACKOFF_BASE_S"] <= values["BACKOFF_CAP_S"],
        "E003",
        "LLMQUEUE BACKOFF_BASE_S must be positive and at most BACKOFF_CAP_S.",
        "For example BACKOFF_BASE_S=1, BACKOFF_CAP_S=300.",
    )
    need(
        values["DRAIN_CONCURRENCY"] >= 1,
        "E004",
        "LLMQUEUE DRAIN_CONCURRENCY must be >= 1.",
        "Use 64.",
    )
    need(values["DRAINS_PER_HOST"] >= 1, "E005", "LLMQUEUE DRAINS_PER_HOST must be >= 1.", "Use 2.")
    need(
        values["HEARTBEAT_S"] * 3 <= values["LEASE_S"],
        "E006",
        "LLMQUEUE HEARTBEAT_S must be at most a third of LEASE_S.",
        "A drain renews its leases every HEARTBEAT_S; a lease must survive a missed renewal.",
    )
    need(
        values["HEARTBEAT_S"] * 2 <= values["SLOT_STALE_S"],
        "E007",
        "LLMQUEUE HEARTBEAT_S must be at most half of SLOT_STALE_S.",
        "Otherwise a live drain's slot looks abandoned between two heartbeats.",
    )
    need(
        values["MAX_PAYLOAD_BYTES"] >= 1024,
        "E008",
        "LLMQUEUE MAX_PAYLOAD_BYTES is too small.",
        "Use 1048576.",
    )
    need(
        1 <= values["MAX_BULK_JOBS"] <= 10000,
        "E009",
        "LLMQUEUE MAX_BULK_JOBS must be between 1 and 10000.",
        "Use 1000.",
    )
    need(
        values["BALANCER"] in STRATEGIES
        and all(v in STRATEGIES for v in (values["BALANCER_BY_MODEL"] or {}).values()),
        "E010",
        "LLMQUEUE BALANCER and BALANCER_BY_MODEL must name known strategies.",
        f"Known: {', '.join(sorted(STRATEGIES))}.",
    )
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
    need(
        values["BREAKER_PROBE_TIMEOUT_S"] > values["UPSTREAM_TIMEOUT_S"],
        "E012",
        "LLMQUEUE BREAKER_PROBE_TIMEOUT_S must exceed UPSTREAM_TIMEOUT_S.",
        "A probe still waiting for its answer would otherwise be taken for lost.",
    )
    need(
        values["HEALTH_INTERVAL_S"] > 0
        and values["HEALTH_TIMEOUT_S"] > 0
        and values["HEALTH_UNHEALTHY_AFTER"] >= 1
        and values["HEALTH_HEALTHY_AFTER"] >= 1,
        "E013",
        "LLMQUEUE HEALTH_* settings cannot work.",
        "Interval and timeout > 0 seconds, thresholds >= 1.",
    )
    need(
        values["LIMIT_BURST_S"] > 0 and values["LIMIT_TOKENS_BURST_S"] > 0,
        "E018",
        "LLMQUEUE LIMIT_BURST_S and LIMIT_TOKENS_BURST_S must be > 0 seconds.",
        "Use 1 and 60 (at most 60: a bucket never holds more than its minute).",
    )
    need(
        values["KEY_FAILURES_PER_WINDOW"] >= 1 and values["KEY_FAILURE_WINDOW_S"] >= 1,
        "E019",
        "LLMQUEUE KEY_FAILURES_PER_WINDOW and KEY_FAILURE_WINDOW_S must be at least 1.",
        "Use 20 wrong keys per 300 seconds.",
    )
    need(
        1 <= values["EMBED_BATCH_MAX"] <= 2048 and 0 <= values["EMBED_BATCH_WAIT_MS"] <= 10000,
        "E020",
        "LLMQUEUE EMBED_BATCH_MAX must be 1-2048 and EMBED_BATCH_WAIT_MS 0-10000.",
        "Use 64 and 20 (2048 inputs is OpenAI's limit per call); EMBED_BATCHING=false turns "
        "merging off.",
    )
    need(
        values["RETENTION_DAYS"] >= 0 and values["DEAD_RETENTION_DAYS"] >= 0,
        "E030",
        "LLMQUEUE RETENTION_DAYS and DEAD_RETENTION_DAYS must be >= 0 (days).",
        "Use 30 and 90; 0 keeps those jobs forever.",
    )
    need(
        1 <= values["RETENTION_BATCH"] <= 10000 and values["RETENTION_RUN_S"] > 0,
        "E031",
        "LLMQUEUE RETENTION_BATCH must be between 1 and 10000, RETENTION_RUN_S > 0 seconds.",
        "Use 1000 and 10: short transactions, a bounded share of each minute.",
    )
    archive = values["RETENTION_ARCHIVE_DIR"]
    need(
        not archive or (os.path.isdir(archive) and os.access(archive, os.W_OK)),
        "E032",
        f"LLMQUEUE RETENTION_ARCHIVE_DIR {archive!r} is not a writable directory.",
        "Create it, or leave it empty to delete without archiving.",
    )
    return errors


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
