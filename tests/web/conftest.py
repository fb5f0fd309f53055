"""Logged-in test clients for the pages."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client


def logged_in(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def web(user: Any) -> Client:
    return logged_in(user)


@pytest.fixture
def admin_web(staff: Any) -> Client:
    return logged_in(staff)
