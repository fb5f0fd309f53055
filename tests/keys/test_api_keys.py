"""API keys: stored hashed, accepted as Bearer and Token, refused when revoked or expired,
never another user's, never logged; and a guesser of keys meets 429s."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from llmqueue.jobs import job_submit
from llmqueue.keys import apikey_authenticate, apikey_create, apikey_revoke
from llmqueue.models import ApiKey
from tests.factories import chat_payload, chat_spec

pytestmark = pytest.mark.django_db

#: each test guesses from an address of its own: wrong keys are counted per address
_addresses = (f"10.13.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def client_with(header: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=next(_addresses))
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def test_the_table_holds_a_digest_never_the_key(user):
    plain, _ = apikey_create(owner=user, name="laptop")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        rows = cursor.fetchall()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0])
    assert plain not in stored
    assert plain.split("_", 2)[2] not in stored  # nor its secret part
    assert hashlib.sha256(plain.encode()).hexdigest() in stored


@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
def test_a_key_works_as_bearer_and_token(user, echo_endpoint, scheme):
    plain, _ = apikey_create(owner=user, name="sdk")
    client = client_with(f"{scheme} {plain}")
    r = client.post("/api/jobs/", {"payload": chat_payload()}, format="json")
    assert r.status_code == 201, r.content
    assert client.get("/api/jobs/").json()["count"] == 1


@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
def test_old_drf_tokens_keep_working(user, scheme):
    token = Token.objects.create(user=user)
    assert client_with(f"{scheme} {token.key}").get("/api/jobs/").status_code == 200


def test_a_revoked_key_is_401(user):
    plain, key = apikey_create(owner=user, name="old")
    client = client_with(f"Bearer {plain}")
    assert client.get("/api/jobs/").status_code == 200
    assert apikey_revoke(owner=user, key_id=key.pk)
    r = client.get("/api/jobs/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_key_is_401(user):
    plain, key = apikey_create(
        owner=user, name="short", expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    client = client_with(f"Bearer {plain}")
    assert client.get("/api/jobs/").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert client.get("/api/jobs/").status_code == 401


def test_a_wrong_secret_with_a_real_prefix_is_401(user):
    plain, _ = apikey_create(owner=user, name="k")
    forged = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")
    assert client_with(f"Bearer {forged}").get("/api/jobs/").status_code == 401


def test_another_users_key_never_reaches_your_jobs(user, other_user, echo_endpoint):
    mine = job_submit(owner=user, spec=chat_spec())[0]
    theirs_plain, _ = apikey_create(owner=other_user, name="theirs")
    client = client_with(f"Bearer {theirs_plain}")
    assert client.get("/api/jobs/").json()["count"] == 0
    assert client.get(f"/api/jobs/{mine.pk}/").status_code == 404
    assert client.post(f"/api/jobs/{mine.pk}/cancel/").status_code == 404


def test_last_used_moves_at_most_once_a_minute(user):
    plain, key = apikey_create(owner=user, name="k")
    assert key.last_used_at is None
    first = apikey_authenticate(plain=plain)
    assert first is not None and first.last_used_at is not None
    stamped = ApiKey.objects.get(pk=key.pk).last_used_at
    assert stamped is not None
    apikey_authenticate(plain=plain)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == stamped  # within the minute: no write
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stamped - dt.timedelta(minutes=2))
    apikey_authenticate(plain=plain)
    assert ApiKey.objects.get(pk=key.pk).last_used_at > stamped - dt.timedelta(minutes=2)


def test_the_key_appears_in_no_log_line(user, echo_endpoint, caplog):
    plain, key = apikey_create(owner=user, name="secretive")
    secret = plain.split("_", 2)[2]
    caplog.set_level(logging.DEBUG)
    good = client_with(f"Bearer {plain}")
    assert good.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201
    assert good.post("/api/jobs/", {"payload": {"model": 1}}, format="json").status_code == 400
    apikey_revoke(owner=user, key_id=key.pk)
    assert good.get("/api/jobs/").status_code == 401  # Django logs the 401 ("Unauthorized: ...")
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for record in caplog.records:
        line = record.getMessage() + " " + str(record.__dict__)
        assert secret not in line, record


def test_a_burst_of_wrong_keys_meets_429s(user, settings):
    settings.LLMQUEUE = {"KEY_FAILURES_PER_WINDOW": 5, "KEY_FAILURE_WINDOW_S": 600}
    address = next(_addresses)
    codes = []
    for i in range(12):
        client = APIClient(REMOTE_ADDR=address)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer lq_{i:012x}_wrong")
        r = client.get("/api/jobs/")
        codes.append(r.status_code)
        if r.status_code == 429:
            assert 0 < int(r["Retry-After"]) <= 600
    assert codes[:5] == [401] * 5
    assert set(codes[5:]) == {429}
    # Even the right key waits out the window from that address...
    plain, _ = apikey_create(owner=user, name="k")
    assert (
        APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Bearer {plain}")
        .get("/api/jobs/")
        .status_code
        == 429
    )
    # ...while another address is not slowed.
    assert client_with(f"Bearer {plain}").get("/api/jobs/").status_code == 200
