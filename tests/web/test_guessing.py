"""Guessing is slowed: ten wrong passwords in a row lock that user out from that address (the
pages' login and the admin's), and every page carries a Content-Security-Policy."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def login(path: str, username: str, password: str, address: str) -> tuple[int, bool]:
    client = Client(REMOTE_ADDR=address)
    r = client.post(path, {"username": username, "password": password})
    return r.status_code, "_auth_user_id" in client.session


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_the_tenth_wrong_password_in_a_row_locks_that_login_out(staff, path):
    right = "pw-" + staff.username
    for _ in range(9):
        assert login(path, staff.username, "wrong", "10.1.1.1") == (200, False)
    # nine in a row: still open, and a success starts the count again
    assert login(path, staff.username, right, "10.1.1.1")[1]
    for _ in range(9):
        assert login(path, staff.username, "wrong", "10.1.1.1") == (200, False)
    status, _ = login(path, staff.username, "wrong", "10.1.1.1")  # the tenth
    assert status == 429
    status, logged_in = login(path, staff.username, right, "10.1.1.1")
    assert (status, logged_in) == (429, False)  # even the right password, for a while
    # The lock is on the pair: the user elsewhere, and others from there, still log in.
    assert login(path, staff.username, right, "10.2.2.2")[1]


def test_the_lockout_page_explains_itself(user):
    for _ in range(10):
        login("/accounts/login/", user.username, "wrong", "10.3.3.3")
    r = Client(REMOTE_ADDR="10.3.3.3").post(
        "/accounts/login/", {"username": user.username, "password": "pw-" + user.username}
    )
    assert r.status_code == 429
    assert "Too many failed logins" in r.content.decode()


@pytest.mark.parametrize(
    "path", ["/", "/jobs/", "/keys/", "/accounts/login/", "/admin/", "/api/docs/"]
)
def test_pages_send_a_content_security_policy(web, admin_web, path):
    r = (admin_web if path.startswith("/admin") else web).get(path)
    assert r.status_code == 200, path
    policy = r["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
