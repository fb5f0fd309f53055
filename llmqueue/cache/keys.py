"""Cache keys: a hash of everything in a request that can change its answer, and its scope.

    scope = "user:42" | "shared"
    key   = "<scope>/<sha256 of the canonical JSON of {v, scope, kind, payload}>"

The whole payload goes in, not an allow-list of known parameters: a parameter added to the
OpenAI API tomorrow (or one a vLLM server reads today) changes the key without anyone having
to teach the cache about it. Canonical JSON (sorted keys, no spaces between tokens) makes key
order and the client's formatting irrelevant; the text inside strings is kept as sent, since a
space or a newline in a prompt can change the answer. Numbers keep their JSON type: 1 and 1.0
are different keys (a miss, never a wrong hit).

The scope is in the hash and in front of it. In the hash, so that two users can never share a
key by construction; in front, so that an entry says whose it is without a lookup.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

#: the scope of answers every user may be served (models whose answers are not private)
SHARED = "shared"
#: bump when the canonical form changes: every old key then simply misses
KEY_VERSION = 1


def canonical_json(value: Any) -> str:
    """``value`` as JSON that is the same text for the same data, however it was written."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def cache_scope(*, owner_id: int, shared: bool) -> str:
    return SHARED if shared else f"user:{owner_id}"


def cache_key(*, scope: str, kind: str, payload: Mapping[str, Any]) -> str:
    """The key of the answer to ``payload`` sent as ``kind``, within ``scope``."""
    text = canonical_json({"v": KEY_VERSION, "scope": scope, "kind": kind, "payload": payload})
    return f"{scope}/{hashlib.sha256(text.encode()).hexdigest()}"


def key_owner_id(key: str) -> int | None:
    """The user a key belongs to, or None for a shared key."""
    scope = key.split("/", 1)[0]
    return int(scope.removeprefix("user:")) if scope.startswith("user:") else None


def model_is_shared(model: str, shared_models: str | Iterable[str]) -> bool:
    """Whether ``model``'s answers go to the shared scope (``"*"`` shares every model).

    ``shared_models`` is a list, or a comma-separated string (as an environment variable is).
    """
    wanted = shared_model_names(shared_models)
    return "*" in wanted or model in wanted


def shared_model_names(shared_models: str | Iterable[str]) -> frozenset[str]:
    """The names in a ``CACHE_SHARED_MODELS`` value (a list, or a comma-separated string)."""
    names = shared_models.split(",") if isinstance(shared_models, str) else shared_models
    return frozenset(n.strip() for n in names if n and n.strip())
