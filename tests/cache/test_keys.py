"""Cache keys (pure): what makes two requests the same, and whose answer it is."""

from __future__ import annotations

import json

import pytest

from llmqueue.cache.keys import (
    SHARED,
    cache_key,
    cache_scope,
    canonical_json,
    key_owner_id,
    model_is_shared,
)

BASE = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}


def key(payload, *, scope="user:1", kind="chat"):
    return cache_key(scope=scope, kind=kind, payload=payload)


def test_key_order_and_json_formatting_do_not_matter():
    compact = json.dumps(BASE, separators=(",", ":"))
    spaced = json.dumps(dict(reversed(list(BASE.items()))), indent=4)
    assert key(json.loads(compact)) == key(json.loads(spaced)) == key(BASE)
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'


def test_whitespace_inside_strings_matters():
    changed = {
        **BASE,
        "messages": [BASE["messages"][0], {"role": "user", "content": "Hello  there"}],
    }
    assert key(changed) != key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.3},
        {"max_tokens": 65},
        {"tools": [{"type": "function", "function": {"name": "g", "parameters": {}}}]},
        {"messages": list(reversed(BASE["messages"]))},
        {"seed": 7},  # a parameter nobody told the cache about
        {"model": "m2"},
    ],
    ids=["temperature", "max_tokens", "tool", "message-order", "new-param", "model"],
)
def test_each_parameter_change_is_another_key(change):
    assert key({**BASE, **change}) != key(BASE)


def test_numbers_keep_their_json_type():
    # 1 and 1.0 mean the same to most servers, but a miss is safe and a wrong hit is not.
    assert key({**BASE, "temperature": 1}) != key({**BASE, "temperature": 1.0})


def test_kind_and_scope_are_part_of_the_key():
    assert key(BASE, kind="completion") != key(BASE)
    assert key(BASE, scope="user:2") != key(BASE)
    assert key(BASE, scope=SHARED) != key(BASE)


def test_scope_and_owner_are_readable_from_the_key():
    assert cache_scope(owner_id=42, shared=False) == "user:42"
    assert cache_scope(owner_id=42, shared=True) == SHARED
    assert key(BASE, scope="user:42").startswith("user:42/")
    assert key_owner_id(key(BASE, scope="user:42")) == 42
    assert key_owner_id(key(BASE, scope=SHARED)) is None
    assert len(key(BASE, scope="user:9999999999")) <= 100  # fits CacheEntry.key


def test_shared_models_setting():
    assert model_is_shared("a", "a, b")
    assert model_is_shared("b", ["a", "b"])
    assert not model_is_shared("c", "a,b")
    assert not model_is_shared("a", "")
    assert model_is_shared("anything", "*")
