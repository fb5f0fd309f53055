"""Test data, in one place."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth import get_user_model

from llmqueue.jobs import JobSpec
from llmqueue.models import Endpoint

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
