"""OpenAI-compatible echo answers: the demo endpoint's and the test stand-in's.

An echo "model" answers a chat with the last user message, a completion with its prompt, and an
embedding with a small deterministic vector. Good enough to see a job travel end to end.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

ECHO_MODEL = "echo"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _vector(text: str, dims: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 6) for b in digest[:dims]]


def _usage(prompt: str, completion: str) -> dict[str, int]:
    p, c = len(prompt.split()), len(completion.split())
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def echo_answer(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON an OpenAI-compatible server would return for ``body`` at route ``kind``."""
    model = body.get("model", ECHO_MODEL)
    created = int(time.time())
    if kind == "chat":
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = _text_of(users[-1].get("content")) if users else ""
        answer = f"echo: {prompt}"
        return {
            "id": f"chatcmpl-echo-{created}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, answer),
        }
    if kind == "completion":
        prompt = body.get("prompt", "")
        prompt = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        answer = f"echo: {prompt}"
        return {
            "id": f"cmpl-echo-{created}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}],
            "usage": _usage(prompt, answer),
        }
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    tokens = sum(len(str(t).split()) for t in items)
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(str(t))}
            for i, t in enumerate(items)
        ],
        # as OpenAI's: an embedding's tokens are all prompt tokens
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_answer(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "owned_by": "llmqueue"} for m in models],
    }
