"""Writing endpoints: the one set of rules for their settings, for the API and the admin.

    endpoint_problems   what is wrong with some settings, by field ({field: [reasons]})
    endpoint_create     a new endpoint, or EndpointInvalid
    endpoint_update     change some settings of one, or EndpointInvalid

The edges parse their input (JSON, a form) into values and show these problems in their own
shape, with the same words. Settings are named as the API names them (``models``, not the
column ``served_models``). The API key is stored and never returned: nothing here logs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from llmqueue.errors import EndpointInvalid
from llmqueue.models import Endpoint

#: the settings an endpoint's writer may give, as the API names them
FIELDS = (
    "name",
    "base_url",
    "api_key",
    "models",
    "weight",
    "max_concurrency",
    "rpm_limit",
    "tpm_limit",
    "timeout_s",
    "enabled",
)
#: what a new endpoint must be given
REQUIRED = ("name", "base_url", "models")
#: (low, high) of the integer settings; None: no upper bound
_INT_BOUNDS: dict[str, tuple[int, int | None]] = {
    "weight": (1, 1000),
    "max_concurrency": (1, 10000),
    "rpm_limit": (1, None),
    "tpm_limit": (1, None),
}
#: (low, high) seconds of a call's timeout
TIMEOUT_BOUNDS = (0.1, 3600.0)
_SLUG = re.compile(r"[-a-zA-Z0-9_]+\Z")
_URL = URLValidator(schemes=["http", "https"])


def _name(value: Any, endpoint_id: int | None) -> list[str]:
    if not isinstance(value, str) or not _SLUG.match(value):
        return ["must be letters, numbers, underscores or hyphens (no spaces)"]
    if len(value) > 100:
        return ["must be at most 100 characters"]
    same = Endpoint.objects.filter(name=value)
    if endpoint_id is not None:
        same = same.exclude(pk=endpoint_id)
    return [f"an endpoint named {value!r} exists already"] if same.exists() else []


def _base_url(value: Any) -> list[str]:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return ["must start with http:// or https://"]
    if len(value) > 500:
        return ["must be at most 500 characters"]
    try:
        _URL(value)
    except ValidationError:
        return ["is not a valid URL, e.g. http://host:8000/v1"]
    return []


def _models(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) for n in value):
        return ["must be a list of model names"]
    names = [n.strip() for n in value if n.strip()]
    if not names:
        return ["name at least one model"]
    if any(len(n) > 200 for n in names):
        return ["model names are at most 200 characters"]
    return []


def _number(field: str, value: Any) -> list[str]:
    if field == "timeout_s":
        low, high = TIMEOUT_BOUNDS
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (
            [] if ok and low <= value <= high else [f"must be between {low:g} and {high:g} seconds"]
        )
    low, top = _INT_BOUNDS[field]
    if value is None and field in ("rpm_limit", "tpm_limit"):
        return []  # no limit
    if not isinstance(value, int) or isinstance(value, bool):
        return ["must be a whole number"]
    if value < low or (top is not None and value > top):
        return [f"must be between {low} and {top}" if top else f"must be at least {low}"]
    return []


def endpoint_problems(
    *, values: Mapping[str, Any], endpoint_id: int | None = None, partial: bool = False
) -> dict[str, list[str]]:
    """Every reason ``values`` are not valid settings, by field; empty when they are.

    ``endpoint_id`` is the endpoint being changed (its own name is not a clash); ``partial``
    checks only the fields given, as a change does."""
    problems: dict[str, list[str]] = {}
    if not partial:
        for field in REQUIRED:
            if values.get(field) in (None, ""):
                problems[field] = ["required"]
    for field, value in values.items():
        if field in problems:
            continue
        if field not in FIELDS:
            found = [f"not a setting of an endpoint; one of {', '.join(FIELDS)}"]
        elif field == "name":
            found = _name(value, endpoint_id)
        elif field == "base_url":
            found = _base_url(value)
        elif field == "models":
            found = _models(value)
        elif field == "api_key":
            ok = isinstance(value, str) and len(value) <= 500
            found = [] if ok else ["must be a string of at most 500 characters"]
        elif field == "enabled":
            found = [] if isinstance(value, bool) else ["must be true or false"]
        else:
            found = _number(field, value)
        if found:
            problems[field] = found
    return problems


def _columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the Endpoint's columns, tidied: no trailing slash, no blank names."""
    columns = dict(values)
    if "base_url" in columns:
        columns["base_url"] = columns["base_url"].rstrip("/")
    if "models" in columns:
        columns["served_models"] = [n.strip() for n in columns.pop("models") if n.strip()]
    return columns


def endpoint_create(
    *,
    name: str,
    base_url: str,
    models: list[str],
    api_key: str = "",
    weight: int = 1,
    max_concurrency: int = 64,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    timeout_s: float = 120.0,
    enabled: bool = True,
) -> Endpoint:
    """A new endpoint with these settings; EndpointInvalid names every field that is wrong."""
    values = {
        "name": name,
        "base_url": base_url,
        "models": models,
        "api_key": api_key,
        "weight": weight,
        "max_concurrency": max_concurrency,
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
        "timeout_s": timeout_s,
        "enabled": enabled,
    }
    if problems := endpoint_problems(values=values):
        raise EndpointInvalid(problems)
    return Endpoint.objects.create(**_columns(values))


def endpoint_update(*, endpoint_id: int, changes: Mapping[str, Any]) -> Endpoint:
    """Change the given settings of one endpoint (an ``api_key`` of "" removes the key);
    EndpointInvalid names every field that is wrong, and nothing changes then.

    Only the given columns are written: the health checks and the drains write the breaker,
    health and latency columns of the same row meanwhile, and a whole-row save from a form
    read seconds ago would put their old values back."""
    if problems := endpoint_problems(values=changes, endpoint_id=endpoint_id, partial=True):
        raise EndpointInvalid(problems)
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint_id)
        columns = _columns(changes)
        for column, value in columns.items():
            setattr(endpoint, column, value)
        if columns:
            endpoint.save(update_fields=[*columns, "updated_at"])
    return endpoint
