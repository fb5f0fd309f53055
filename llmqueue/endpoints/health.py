"""Active health checks: ``GET {base_url}/models`` on every enabled endpoint, traffic or not.

The fleet's one checker (``llmqueue.worker.health``) runs ``endpoints_check`` every
``HEALTH_INTERVAL_S``; the admin's "check now" runs it too. An endpoint becomes unhealthy
after ``HEALTH_UNHEALTHY_AFTER`` failed checks in a row and healthy again after
``HEALTH_HEALTHY_AFTER`` good ones. The claim skips unhealthy endpoints. Passive health, from
real calls, goes to the breaker (``llmqueue.endpoints.pools``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from llmqueue.calls.client import tls_context
from llmqueue.conf import conf
from llmqueue.endpoints.pools import breaker_after_health_pass
from llmqueue.models import Endpoint


def endpoint_probe(endpoint: Endpoint) -> tuple[bool, str]:
    """One check: (healthy?, why not). Never raises."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        r = httpx.get(
            f"{endpoint.base_url.rstrip('/')}/models",
            headers=headers,
            timeout=conf.HEALTH_TIMEOUT_S,
            verify=tls_context(),  # a new one each check cost ~46 ms of CPU
        )
    except httpx.HTTPError as exc:
        return False, f"health check: {type(exc).__name__}: {exc}"[:500]
    if 200 <= r.status_code < 300:
        return True, ""
    return False, f"health check: HTTP {r.status_code}"


def endpoint_health_record(*, endpoint_id: int, ok: bool, error: str = "") -> None:
    """Count a check and move ``healthy`` when a threshold is crossed (guarded updates)."""
    now = timezone.now()
    rows = Endpoint.objects.filter(pk=endpoint_id)
    if ok:
        # One transaction: whoever sees the passing check sees its effect on the breaker.
        with transaction.atomic():
            rows.update(
                health_successes=F("health_successes") + 1, health_failures=0, last_check_at=now
            )
            rows.filter(healthy=False, health_successes__gte=conf.HEALTH_HEALTHY_AFTER).update(
                healthy=True, last_error=""
            )
            # Healthy by its checks: an open breaker need not sit out its (doubled) wait.
            breaker_after_health_pass(endpoint_id=endpoint_id)
    else:
        rows.update(
            health_failures=F("health_failures") + 1,
            health_successes=0,
            last_check_at=now,
            last_error=error,
        )
        rows.filter(healthy=True, health_failures__gte=conf.HEALTH_UNHEALTHY_AFTER).update(
            healthy=False
        )


def endpoints_check(*, endpoint_ids: list[int] | None = None) -> dict[str, bool]:
    """Check endpoints at once (all enabled ones by default); returns name -> healthy now."""
    qs = Endpoint.objects.filter(enabled=True)
    if endpoint_ids is not None:
        qs = Endpoint.objects.filter(pk__in=endpoint_ids)
    endpoints = list(qs)
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        outcomes = list(pool.map(endpoint_probe, endpoints))
    for e, (ok, error) in zip(endpoints, outcomes, strict=True):
        endpoint_health_record(endpoint_id=e.pk, ok=ok, error=error)
    return dict(
        Endpoint.objects.filter(pk__in=[e.pk for e in endpoints]).values_list("name", "healthy")
    )
