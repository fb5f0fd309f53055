"""Which upstream path serves which kind of job: the one table, for every part that needs it.

The client calls ``{base_url}{KIND_PATHS[kind]}``; a JSONL line of the OpenAI Batch API names
its kind by that path (with the ``/v1`` prefix its ``url`` carries); the stand-in and the demo
answer on them. It sits on the ground floor because the client, below the job services, reads it.
"""

from __future__ import annotations

from typing import Any

#: kind (``llmqueue.models.Kind``'s values) -> the path under an endpoint's base_url. Plain
#: strings, so that the stand-in server, which runs without Django, reads the same table.
KIND_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
}

#: the prefix of OpenAI's own URLs; a base_url usually ends with it
V1 = "/v1"


def kind_of_path(url: Any) -> str | None:
    """The kind a request path asks for (``/v1/embeddings``, ``/embeddings``, with or without
    a trailing slash or query string), or None when no kind lives there."""
    if not isinstance(url, str):
        return None
    path = url.split("?", 1)[0].rstrip("/")
    if path.startswith(V1 + "/"):
        path = path[len(V1) :]
    return next((kind for kind, p in KIND_PATHS.items() if p == path), None)


def v1_paths() -> list[str]:
    """The paths as OpenAI writes them, in the table's order: ``/v1/chat/completions``, ..."""
    return [V1 + p for p in KIND_PATHS.values()]
