"""The classification of upstream answers, on real httpx responses (MockTransport, no network)."""

import asyncio
import datetime as dt
import email.utils
import time

import httpx
import pytest

from llmqueue.calls.client import Upstream, parse_retry_after
from llmqueue.calls.types import CallOutcome, CallRequest, Target
from llmqueue.models import Outcome

TARGET = Target(
    id=1, name="ep", base_url="http://upstream.test/v1", api_key="sk-secret", timeout_s=5
)


def request(kind: str = "chat") -> CallRequest:
    return CallRequest(kind=kind, payload={"model": "m"}, target=TARGET)


def run(handler, kind: str = "chat"):
    seen = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def go():
        up = Upstream(max_connections=4, transport=lambda limits: httpx.MockTransport(wrapped))
        try:
            return await up.call(request(kind))
        finally:
            await up.aclose()

    return asyncio.run(go()), seen


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("chat", "/v1/chat/completions"),
        ("completion", "/v1/completions"),
        ("embedding", "/v1/embeddings"),
    ],
)
def test_routes_by_kind_and_sends_the_key(kind, path):
    result, seen = run(lambda r: httpx.Response(200, json={"ok": 1}), kind)
    assert result.outcome == Outcome.SUCCESS and result.body == {"ok": 1}
    assert seen[0].url.path == path
    assert seen[0].headers["authorization"] == "Bearer sk-secret"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (429, Outcome.RETRY),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (422, Outcome.REJECTED),
    ],
)
def test_status_classes(status, outcome):
    result, _ = run(lambda r: httpx.Response(status, json={"error": {"message": f"nope {status}"}}))
    assert result.outcome == outcome
    assert result.http_status == status
    assert result.error == f"HTTP {status}: nope {status}"


def test_429_carries_retry_after():
    result, _ = run(lambda r: httpx.Response(429, headers={"Retry-After": "7"}, json={}))
    assert result.outcome == Outcome.RETRY and result.retry_after == 7


def test_connect_error_and_timeout_are_retryable():
    def refuse(r):
        raise httpx.ConnectError("refused")

    def slow(r):
        raise httpx.ReadTimeout("slow")

    refused = run(refuse)[0]
    assert refused.outcome == Outcome.RETRY and refused.spent is False  # never sent: refunded
    assert refused.health == CallOutcome.FAILURE
    result = run(slow)[0]
    assert result.outcome == Outcome.RETRY and result.error.startswith("timeout")
    assert result.spent is True and result.health == CallOutcome.FAILURE


def test_non_json_success_is_retryable():
    result, _ = run(lambda r: httpx.Response(200, text="<html>proxy error</html>"))
    assert result.outcome == Outcome.RETRY and "not JSON" in result.error


def test_parse_retry_after():
    now = time.time()
    when = email.utils.format_datetime(dt.datetime.fromtimestamp(now + 30, dt.UTC), usegmt=True)
    assert parse_retry_after("5") == 5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after(when, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_refused_connection_through_the_real_transport_is_not_spent():
    """Through aiohttp, to a port where nothing listens (the transport's own mapping)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    target = Target(
        id=9, name="gone", base_url=f"http://127.0.0.1:{port}/v1", api_key="", timeout_s=5
    )
    c = CallRequest(kind="chat", payload={"model": "m"}, target=target)

    async def go():
        up = Upstream(max_connections=2)
        try:
            return await up.call(c)
        finally:
            await up.aclose()

    result = asyncio.run(go())
    assert result.outcome == Outcome.RETRY and result.spent is False
    assert result.error.startswith("cannot connect")


def test_health_of_statuses():
    for status, health in [
        (200, CallOutcome.SUCCESS),
        (503, CallOutcome.FAILURE),
        (429, CallOutcome.NEUTRAL),
        (400, CallOutcome.NEUTRAL),
    ]:
        result, _ = run(lambda r, s=status: httpx.Response(s, json={}))
        assert result.health == health, status
