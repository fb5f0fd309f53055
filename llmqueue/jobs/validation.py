"""What a job's payload must hold, per kind; shared by the API, the forms and bulk uploads.

Returns problems as "field: reason" strings naming the path inside the payload, so that a
caller with 1000 jobs can find the one that is wrong.
"""

from __future__ import annotations

from typing import Any

from llmqueue.models import Kind

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
