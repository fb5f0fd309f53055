"""Calls to OpenAI-compatible endpoints, and the one place their failures are classified.

    chat        -> POST {base_url}/chat/completions
    completion  -> POST {base_url}/completions
    embedding   -> POST {base_url}/embeddings

Every call ends as an ``AttemptResult`` whose ``outcome`` is one of:

    success    2xx with a JSON body
    retry      connect error, timeout, 5xx, 429 (with its Retry-After), a 2xx that is not JSON
    rejected   any other 4xx: the request's own fault, retrying cannot help

A 429 gives the job its attempt back and pauses the endpoint (``pause_s``), as does a
response that reports the endpoint's rate limit used up. The result's ``health`` is what
the call says about the endpoint, for its breaker: connect
errors, timeouts, 5xx and non-JSON 2xx are failures; 429 and other 4xx are neutral ("slow
down" and "your request" say nothing of its health). A connect error also gives the job its
attempt back (``spent=False``): the request never reached anyone.

httpx is the API; the transport underneath is aiohttp's (``httpx-aiohttp``): on this machine
httpx's default transport spends ~14 ms of CPU per call at 64 calls in flight, aiohttp's
~0.7 ms (bench/upstream_clients.py measures both).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import time
from typing import Any

import httpx
from django.utils import timezone
from httpx_aiohttp import AiohttpTransport

from llmqueue.breaker import CallOutcome, outcome_for_status
from llmqueue.dispatch import Target
from llmqueue.jobs import AttemptResult, Claim
from llmqueue.models import Kind, Outcome

PATHS = {
    Kind.CHAT: "/chat/completions",
    Kind.COMPLETION: "/completions",
    Kind.EMBEDDING: "/embeddings",
}


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
    claim: Claim, response: httpx.Response, started: dt.datetime, ms: float
) -> AttemptResult:
    status = response.status_code
    common: dict[str, Any] = {
        "claim": claim,
        "started_at": started,
        "duration_ms": ms,
        "http_status": status,
        "health": outcome_for_status(status),
        "pause_s": rate_limit_exhausted(response.headers),
    }
    if 200 <= status < 300:
        try:
            return AttemptResult(outcome=Outcome.SUCCESS, body=response.json(), **common)
        except ValueError:
            # A proxy's error page with a 200: the endpoint is not answering as it should.
            common["health"] = CallOutcome.FAILURE
            return AttemptResult(
                outcome=Outcome.RETRY, error=f"HTTP {status}: body is not JSON", **common
            )
    message = f"HTTP {status}: {_error_message(response)}"
    if status == 429:
        # "Slow down" is about the endpoint, not the job: the job gets its attempt back, and
        # the endpoint is paused (Retry-After, or a second when it names no time).
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        common["pause_s"] = max(common["pause_s"] or 0.0, retry_after or 1.0)
        return AttemptResult(
            outcome=Outcome.RETRY, error=message, retry_after=retry_after, spent=False, **common
        )
    if 400 <= status < 500:
        return AttemptResult(outcome=Outcome.REJECTED, error=message, **common)
    return AttemptResult(outcome=Outcome.RETRY, error=message, **common)


class Upstream:
    """One pooled httpx client per endpoint, for the life of a drain."""

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._clients: dict[tuple[int, str, str], httpx.AsyncClient] = {}

    def _client(self, target: Target) -> httpx.AsyncClient:
        key = (target.id, target.base_url, target.api_key)
        client = self._clients.get(key)
        if client is None:
            headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
            client = httpx.AsyncClient(
                base_url=target.base_url.rstrip("/"),
                headers=headers,
                transport=AiohttpTransport(
                    limits=httpx.Limits(
                        max_connections=self._max_connections,
                        max_keepalive_connections=self._max_connections,
                    ),
                ),
            )
            self._clients[key] = client
        return client

    async def call(self, claim: Claim) -> AttemptResult:
        target = claim.target
        started = timezone.now()
        t0 = time.perf_counter()
        try:
            response = await self._client(target).post(
                PATHS[Kind(claim.kind)],
                json=claim.payload,
                timeout=httpx.Timeout(target.timeout_s, connect=min(10.0, target.timeout_s)),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Refused, unreachable, or no connection in time: the request never left, so the
            # job spent nothing. (The aiohttp transport reports a refusal as ConnectTimeout;
            # its cause says what really happened.)
            cause = exc.__cause__ or exc
            error = f"cannot connect: {type(cause).__name__}: {cause}"
            return self._failed(claim, started, t0, error, spent=False)
        except httpx.TimeoutException as exc:
            error = f"timeout after {target.timeout_s:g}s ({type(exc).__name__})"
            return self._failed(claim, started, t0, error, spent=True)
        except httpx.HTTPError as exc:
            return self._failed(claim, started, t0, f"{type(exc).__name__}: {exc}", spent=True)
        return classify(claim, response, started, (time.perf_counter() - t0) * 1000)

    @staticmethod
    def _failed(
        claim: Claim, started: dt.datetime, t0: float, error: str, *, spent: bool
    ) -> AttemptResult:
        return AttemptResult(
            claim=claim,
            started_at=started,
            duration_ms=(time.perf_counter() - t0) * 1000,
            outcome=Outcome.RETRY,
            error=error[:2000],
            health=CallOutcome.FAILURE,
            spent=spent,
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
