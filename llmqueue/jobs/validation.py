"""The intake's rules: what a job spec must hold, checked once for every edge.

The API (single and bulk), the submit form, JSONL uploads and cache warming parse their own
input into plain values (a JSON number, a form field), then ask these functions what is wrong
with them, and show the answer in their own shape (400 field errors, 413, form errors, lines).

``payload_problems`` returns "field: reason" strings naming the path inside the payload, so
that a caller with 1000 jobs can find the one that is wrong; ``spec_problems`` returns
{field: [reasons]} for the spec's own fields; ``payload_oversize`` is the one size limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from django.utils.dateparse import parse_datetime

from llmqueue.conf import conf
from llmqueue.models import Kind

#: the bounds of a job's priority (higher runs first), and the default
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 9, 5
#: the longest idempotency key (the column's size)
IDEMPOTENCY_KEY_MAX = 200
#: Kind.values builds a new list at each read; a bulk submission asks 1,000 times
_KINDS = frozenset(Kind.values)

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _chat_problems(payload: dict[str, Any]) -> list[str]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["messages: required for kind 'chat', a non-empty list of {role, content}"]
    problems = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            problems.append(f"{where}: must be an object with role and content")
            continue
        role = m.get("role")
        if role not in _ROLES:
            problems.append(f"{where}.role: must be one of {', '.join(sorted(_ROLES))}")
        content = m.get("content")
        # An assistant turn that only calls tools may carry no content.
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            problems.append(f"{where}.content: required")
        elif content is not None and not isinstance(content, str | list):
            problems.append(f"{where}.content: must be a string or a list of content parts")
    return problems


def payload_problems(kind: str, payload: Any) -> list[str]:
    """Every reason ``payload`` is not a valid request of ``kind``; empty when it is."""
    if not isinstance(payload, dict):
        return ["must be a JSON object"]
    problems = []
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        problems.append("model: required, the name of the model to call")
    elif len(model) > 200:
        problems.append("model: at most 200 characters")
    if payload.get("stream"):
        problems.append("stream: streaming is not supported by a queue; leave it unset or false")
    if kind == Kind.CHAT:
        problems += _chat_problems(payload)
    elif kind == Kind.COMPLETION:
        prompt = payload.get("prompt")
        if not isinstance(prompt, str | list) or prompt in ("", []):
            problems.append("prompt: required for kind 'completion', a string or a list of strings")
    elif kind == Kind.EMBEDDING:
        value = payload.get("input")
        if not isinstance(value, str | list) or value in ("", []):
            problems.append("input: required for kind 'embedding', a string or a list")
    return problems


def _bounds(value: int, low: int, high: int | None = None) -> list[str]:
    """Django's and DRF's own words, so that every edge reads alike."""
    if value < low:
        return [f"must be greater than or equal to {low}"]
    if high is not None and value > high:
        return [f"must be less than or equal to {high}"]
    return []


def spec_problems(
    *,
    kind: Any,
    priority: Any = PRIORITY_DEFAULT,
    max_attempts: Any = None,
    idempotency_key: Any = None,
    cache: Any = True,
    cache_ttl: Any = None,
) -> dict[str, list[str]]:
    """Every reason the spec's own fields (all but the payload) are wrong, by field name;
    empty when they are right. Values come parsed (ints, bools, strings) by the edge."""
    problems: dict[str, list[str]] = {}
    if kind not in _KINDS:
        problems["kind"] = [f"{kind!r} is not a valid choice; one of {', '.join(Kind.values)}"]
    if not _is_int(priority):
        problems["priority"] = ["must be an integer"]
    elif found := _bounds(priority, PRIORITY_MIN, PRIORITY_MAX):
        problems["priority"] = found
    if max_attempts is not None:
        limit = int(conf.MAX_ATTEMPTS_LIMIT)
        if not _is_int(max_attempts):
            problems["max_attempts"] = ["must be an integer"]
        elif max_attempts > limit:
            problems["max_attempts"] = [
                f"must be less than or equal to {limit}; a job gets at most {limit} attempts "
                "(LLMQUEUE_MAX_ATTEMPTS_LIMIT)"
            ]
        elif found := _bounds(max_attempts, 1):
            problems["max_attempts"] = found
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not idempotency_key
        or len(idempotency_key) > IDEMPOTENCY_KEY_MAX
    ):
        problems["idempotency_key"] = [
            f"must be a non-empty string of at most {IDEMPOTENCY_KEY_MAX} characters"
        ]
    if not isinstance(cache, bool):
        problems["cache"] = ["must be true or false"]
    if cache_ttl is not None:
        ttl_limit = int(conf.CACHE_TTL_S)
        if not _is_int(cache_ttl):
            problems["cache_ttl"] = ["must be an integer"]
        elif cache_ttl > ttl_limit:
            problems["cache_ttl"] = [
                f"must be at most {ttl_limit} (the cache's own TTL); it can only shorten it"
            ]
        elif found := _bounds(cache_ttl, 1):
            problems["cache_ttl"] = found
    return problems


#: the longest a job may wait for its deadline: 30 days, seconds
EXPIRES_IN_MAX = 30 * 86400


def deadline_of(
    *, deadline: Any, expires_in: Any, now: dt.datetime
) -> tuple[dt.datetime | None, dict[str, list[str]]]:
    """A job's deadline from either field (an aware datetime or ISO 8601 text, or seconds
    from ``now``): (the deadline or None, {}) or (None, {field: [reasons]})."""
    if deadline is not None and expires_in is not None:
        return None, {"deadline": ["give deadline or expires_in, not both"]}
    if expires_in is not None:
        if not _is_int(expires_in):
            return None, {"expires_in": ["must be an integer number of seconds"]}
        if found := _bounds(expires_in, 1, EXPIRES_IN_MAX):
            return None, {"expires_in": found}
        return now + dt.timedelta(seconds=expires_in), {}
    if deadline is None:
        return None, {}
    when = parse_datetime(deadline) if isinstance(deadline, str) else deadline
    if not isinstance(when, dt.datetime):
        return None, {"deadline": ["must be an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z"]}
    if when.tzinfo is None:
        return None, {"deadline": ["must name its time zone (e.g. Z or +02:00)"]}
    if when <= now:
        return None, {"deadline": ["is in the past"]}
    if when > now + dt.timedelta(seconds=EXPIRES_IN_MAX):
        return None, {"deadline": [f"must be at most {EXPIRES_IN_MAX // 86400} days away"]}
    return when, {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Oversize:
    """A payload over ``LLMQUEUE_MAX_PAYLOAD_BYTES``."""

    size: int
    limit: int

    @property
    def reason(self) -> str:
        return f"is {self.size} bytes; the limit is {self.limit} bytes"


def payload_size(payload: Any) -> int:
    """The payload's size as compact JSON in UTF-8: what the limit counts, whatever the edge
    received (a pretty-printed body, a form, a JSONL line)."""
    return len(json.dumps(payload, separators=(",", ":")).encode())


def payload_oversize(payload: Any) -> Oversize | None:
    """The payload's size and the limit when it is over ``LLMQUEUE_MAX_PAYLOAD_BYTES``."""
    limit = int(conf.MAX_PAYLOAD_BYTES)
    size = payload_size(payload)
    return Oversize(size, limit) if size > limit else None
