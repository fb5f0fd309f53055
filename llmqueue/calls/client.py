"""Calls to OpenAI-compatible endpoints, and the one place their failures are classified.

    chat        -> POST {base_url}/chat/completions
    completion  -> POST {base_url}/completions
    embedding   -> POST {base_url}/embeddings

Every call takes a ``CallRequest`` and ends as a ``CallResult`` (``llmqueue.calls.types``) whose
``outcome`` is one of:

    success    2xx with a JSON body
    retry      connect error, timeout, 5xx, 429 (with its Retry-After), a 2xx that is not JSON
    rejected   any other 4xx: the request's own fault, retrying cannot help

A 429 gives the job its attempt back and pauses the endpoint (``pause_s``), as does a
response that reports the endpoint's rate limit used up. The result's ``health`` is what
the call says about the endpoint, for its breaker: connect
errors, timeouts, 5xx and non-JSON 2xx are failures; 429 and other 4xx are neutral ("slow
down" and "your request" say nothing of its health). A connect error also gives the job its
attempt back (``spent=False``): the request never reached anyone.

httpx is the API (requests, responses, timeouts, errors); the transport underneath is
aiohttp's (``httpx-aiohttp``), and calls go to it directly (``Upstream``). CPU per call at 64
calls in flight on the 2-core development machine (bench/upstream_clients.py): httpx's own
transport ~15 ms, an AsyncClient over aiohttp's ~1.1 ms, that transport alone ~0.72 ms,
aiohttp without httpx ~0.55 ms.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from django.utils import timezone
from httpx_aiohttp import AiohttpTransport

from llmqueue.calls.paths import KIND_PATHS
from llmqueue.calls.types import CallOutcome, CallRequest, CallResult, Target, outcome_for_status
from llmqueue.models import Outcome

USER_AGENT = "llmqueue"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds from OpenAI's reset durations ("1s", "6m0s", "20ms") or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def rate_limit_exhausted(headers: httpx.Headers) -> float | None:
    """Seconds to pause an endpoint that reports a rate limit used up, even on a success.

    OpenAI-style headers: ``x-ratelimit-remaining-requests: 0`` with
    ``x-ratelimit-reset-requests: 1s`` (and the same for tokens).
    """
    pause = None
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0":
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) or 1.0
            pause = max(pause or 0.0, reset)
    return pause


def _error_message(response: httpx.Response) -> str:
    """The upstream's own words: OpenAI's {"error": {"message": ...}} or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
    return response.text[:2000]


def classify(
    target: Target, response: httpx.Response, started: dt.datetime, ms: float
) -> CallResult:
    """The one classification of an HTTP answer (the module docstring tells the rules)."""
    status = response.status_code
    common: dict[str, Any] = {
        "target": target,
        "started_at": started,
        "duration_ms": ms,
        "http_status": status,
        "health": outcome_for_status(status),
        "pause_s": rate_limit_exhausted(response.headers),
    }
    if 200 <= status < 300:
        try:
            return CallResult(outcome=Outcome.SUCCESS, body=response.json(), **common)
        except ValueError:
            # A proxy's error page with a 200: the endpoint is not answering as it should.
            common["health"] = CallOutcome.FAILURE
            return CallResult(
                outcome=Outcome.RETRY, error=f"HTTP {status}: body is not JSON", **common
            )
    message = f"HTTP {status}: {_error_message(response)}"
    if status == 429:
        # "Slow down" is about the endpoint, not the job: the job gets its attempt back, and
        # the endpoint is paused (Retry-After, or a second when it names no time).
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        common["pause_s"] = max(common["pause_s"] or 0.0, retry_after or 1.0)
        return CallResult(
            outcome=Outcome.RETRY, error=message, retry_after=retry_after, spent=False, **common
        )
    if 400 <= status < 500:
        return CallResult(outcome=Outcome.REJECTED, error=message, **common)
    return CallResult(outcome=Outcome.RETRY, error=message, **common)


def aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return AiohttpTransport(limits=limits, verify=tls_context())


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process, as httpx makes it (certifi's CA bundle, or SSL_CERT_FILE),
    for the calls and the health checks: making one reads the bundle, ~46 ms of CPU, which
    every new drain's first call and every health check paid before."""
    return httpx.create_ssl_context()


@dataclasses.dataclass(frozen=True)
class _Route:
    """What every call to one endpoint shares: its pooled transport, URLs and headers."""

    transport: httpx.AsyncBaseTransport
    urls: dict[str, httpx.URL]
    headers: dict[str, str]
    timeout: dict[str, float | None]


class Upstream:
    """One pooled transport per endpoint, for the life of a drain.

    A call is an ``httpx.Request`` sent straight to the transport (httpx's transport API),
    not through ``httpx.AsyncClient``: the client's per-call extras (URL merging, the cookie
    jar, auth and redirect flows, event hooks) do nothing for an API call and cost ~0.4 ms
    of CPU per call, a third of the whole call (bench/upstream_clients.py: "httpx+aiohttp"
    against "httpx transport"). Requests, responses, timeouts and errors are httpx's.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        transport: Callable[[httpx.Limits], httpx.AsyncBaseTransport] = aiohttp_transport,
    ) -> None:
        self._max_connections = max_connections
        self._transport = transport  # given the pool's limits; tests pass httpx.MockTransport
        self._routes: dict[tuple[int, str, str], _Route] = {}

    def _route(self, target: Target) -> _Route:
        key = (target.id, target.base_url, target.api_key)
        route = self._routes.get(key)
        if route is None:
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            if target.api_key:
                headers["Authorization"] = f"Bearer {target.api_key}"
            base = target.base_url.rstrip("/")
            limits = httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            )
            timeout = httpx.Timeout(target.timeout_s, connect=min(10.0, target.timeout_s))
            route = _Route(
                transport=self._transport(limits),
                urls={kind: httpx.URL(base + path) for kind, path in KIND_PATHS.items()},
                headers=headers,
                timeout=timeout.as_dict(),
            )
            self._routes[key] = route
        return route

    async def call(self, call: CallRequest) -> CallResult:
        target = call.target
        route = self._route(target)
        request = httpx.Request(
            "POST",
            route.urls[call.kind],
            json=call.payload,
            headers=route.headers,
            extensions={"timeout": route.timeout},
        )
        started = timezone.now()
        t0 = time.perf_counter()
        try:
            response = await route.transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Refused, unreachable, or no connection in time: the request never left, so the
            # job spent nothing. (The aiohttp transport reports a refusal as ConnectTimeout;
            # its cause says what really happened.)
            cause = exc.__cause__ or exc
            error = f"cannot connect: {type(cause).__name__}: {cause}"
            return self._failed(target, started, t0, error, spent=False)
        except httpx.TimeoutException as exc:
            error = f"timeout after {target.timeout_s:g}s ({type(exc).__name__})"
            return self._failed(target, started, t0, error, spent=True)
        except httpx.HTTPError as exc:
            return self._failed(target, started, t0, f"{type(exc).__name__}: {exc}", spent=True)
        return classify(target, response, started, (time.perf_counter() - t0) * 1000)

    @staticmethod
    def _failed(
        target: Target, started: dt.datetime, t0: float, error: str, *, spent: bool
    ) -> CallResult:
        return CallResult(
            target=target,
            started_at=started,
            duration_ms=(time.perf_counter() - t0) * 1000,
            outcome=Outcome.RETRY,
            error=error[:2000],
            health=CallOutcome.FAILURE,
            spent=spent,
        )

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.transport.aclose()
        self._routes.clear()
