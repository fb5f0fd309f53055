"""Test data, in one place."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from llmqueue.calls.types import CallResult
from llmqueue.jobs import AttemptResult, Claim, JobSpec
from llmqueue.models import Endpoint, Outcome

_seq = itertools.count(1)


def make_user(*, username: str | None = None, staff: bool = False, **kw: Any) -> Any:
    name = username or f"user{next(_seq)}"
    return get_user_model().objects.create_user(
        username=name, password="pw-" + name, is_staff=staff, is_superuser=staff, **kw
    )


def make_endpoint(
    *, name: str | None = None, base_url: str = "http://127.0.0.1:9/v1", **kw: Any
) -> Endpoint:
    kw.setdefault("served_models", ["echo"])
    return Endpoint.objects.create(name=name or f"ep{next(_seq)}", base_url=base_url, **kw)


def chat_payload(text: str = "hello", model: str = "echo", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


def chat_spec(text: str | None = None, *, priority: int = 5, **kw: Any) -> JobSpec:
    # A distinct request each by default: identical ones are collapsed by the response cache
    # (a hit, or a single-flight follower), which only the cache's own tests want.
    text = f"hello {next(_seq)}" if text is None else text
    return JobSpec(kind="chat", payload=chat_payload(text), priority=priority, **kw)


def embedding_spec(text: str, *, model: str = "echo", **kw: Any) -> JobSpec:
    return JobSpec(kind="embedding", payload={"model": model, "input": text}, **kw)


def attempt(
    claim: Claim,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    duration_ms: float = 1.0,
    started_at: dt.datetime | None = None,
    **call: Any,
) -> AttemptResult:
    """A claim paired with its call's result, as the drain pairs them."""
    result = CallResult(
        target=claim.target,
        started_at=started_at or timezone.now(),
        duration_ms=duration_ms,
        outcome=outcome,
        **call,
    )
    return AttemptResult(claim=claim, call=result)
