"""The API keys page: a key is made and shown once, listed by name, and revoked."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from llmqueue.models import ApiKey
from tests.fixtures import logged_in

pytestmark = pytest.mark.django_db


def test_make_use_and_revoke_a_key(web, user):
    r = web.post("/keys/", {"name": "laptop", "expires_on": "2999-01-01"})
    assert r.status_code == 200
    page = r.content.decode()
    plain = re.search(r'<code id="new-key">(lq_[^<]+)</code>', page).group(1)
    assert "laptop" in page
    key = ApiKey.objects.get(owner=user)
    assert key.expires_at.year == 2999
    # shown once: the list never shows it again
    assert plain not in web.get("/keys/").content.decode()

    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert api.get("/api/jobs/").status_code == 200
    assert "never" not in web.get("/keys/").content.decode().split("laptop")[1].split("</tr>")[0]

    assert web.post(f"/keys/{key.pk}/revoke/").status_code == 302
    assert "revoked" in web.get("/keys/").content.decode()
    assert api.get("/api/jobs/").status_code == 401


def test_a_past_expiry_is_refused_with_its_reason(web):
    r = web.post("/keys/", {"name": "x", "expires_on": "2000-01-01"})
    assert "must be a day after today" in r.content.decode()
    assert not ApiKey.objects.exists()


def test_nobody_revokes_another_users_key(web, other_user):
    from llmqueue.keys import apikey_create

    _, theirs = apikey_create(owner=other_user, name="theirs")
    web.post(f"/keys/{theirs.pk}/revoke/")
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert "theirs" not in web.get("/keys/").content.decode()


def test_staff_make_a_key_in_the_admin(staff, user):
    admin = logged_in(staff)
    r = admin.post(
        "/admin/llmqueue/apikey/add/", {"owner": user.pk, "name": "ops-made"}, follow=True
    )
    assert r.status_code == 200
    plain = re.search(r"(lq_[0-9a-f]{12}_[A-Za-z0-9_-]+)", r.content.decode()).group(1)
    assert ApiKey.objects.get(name="ops-made").owner == user
    assert APIClient(HTTP_AUTHORIZATION=f"Token {plain}").get("/api/jobs/").status_code == 200
    listing = admin.get("/admin/llmqueue/apikey/").content.decode()
    assert "ops-made" in listing and plain not in listing
