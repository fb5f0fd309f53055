"""Users see only their own jobs; staff alone manage endpoints; an API key never leaks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.test import APIClient

from llmqueue.jobs import job_submit
from tests.factories import chat_spec, make_endpoint, make_user

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-live-TOPSECRET-0123456789"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/jobs/{id}/"),
        ("post", "/api/jobs/{id}/cancel/"),
        ("post", "/api/jobs/{id}/retry/"),
        ("get", "/jobs/{id}/"),
        ("post", "/jobs/{id}/cancel/"),
        ("post", "/jobs/{id}/retry/"),
    ],
)
def test_another_users_job_is_404(method, path, echo_endpoint):
    owner, intruder = make_user(), make_user()
    job = job_submit(owner=owner, spec=chat_spec())[0]
    client = APIClient()
    client.force_login(intruder)
    r = getattr(client, method)(path.format(id=job.pk))
    assert r.status_code == 404
    job.refresh_from_db()
    assert job.status == "queued"


def test_list_never_shows_another_users_jobs(api, other_user, echo_endpoint):
    job_submit(owner=other_user, spec=chat_spec())
    assert api.get("/api/jobs/").json()["count"] == 0


def test_non_staff_cannot_manage_endpoints_or_see_the_admin(api, user):
    ep = make_endpoint()
    assert api.get(f"/api/endpoints/{ep.pk}/").status_code == 403
    assert api.patch(f"/api/endpoints/{ep.pk}/", {"weight": 3}, format="json").status_code == 403
    assert api.delete(f"/api/endpoints/{ep.pk}/").status_code == 403
    web = Client()
    web.force_login(user)
    assert web.get("/admin/llmqueue/endpoint/").status_code == 302  # to the admin login


def test_api_key_never_appears_in_responses_pages_or_logs(staff, user, caplog):
    caplog.set_level(logging.DEBUG)
    ep = make_endpoint(api_key=SECRET)
    job_submit(owner=staff, spec=chat_spec())
    web = Client()
    web.force_login(staff)
    api = APIClient()
    api.force_login(staff)
    pages = [
        web.get("/"),
        web.get("/jobs/"),
        web.get("/jobs/new/"),
        web.get("/admin/llmqueue/endpoint/"),
        web.get(f"/admin/llmqueue/endpoint/{ep.pk}/change/"),
        web.get("/admin/llmqueue/job/"),
        api.get("/api/endpoints/"),
        api.get(f"/api/endpoints/{ep.pk}/"),
        api.get("/api/stats/"),
        api.get("/api/jobs/"),
        api.get("/api/schema/"),
        api.patch(f"/api/endpoints/{ep.pk}/", {"weight": 2}, format="json"),
    ]
    for r in pages:
        assert r.status_code == 200, r
        assert SECRET not in r.content.decode(), r.wsgi_request.path
    assert SECRET not in caplog.text


def test_admin_keeps_the_key_when_the_field_is_left_blank(staff):
    ep = make_endpoint(api_key=SECRET)
    web = Client()
    web.force_login(staff)
    form = {
        "name": ep.name,
        "base_url": ep.base_url,
        "api_key": "",
        "served_models": "echo, llama",
        "weight": 3,
        "max_concurrency": 8,
        "timeout_s": 30,
        "enabled": "on",
    }
    r = web.post(f"/admin/llmqueue/endpoint/{ep.pk}/change/", form)
    assert r.status_code == 302, r.content.decode()[:2000]
    ep.refresh_from_db()
    assert ep.api_key == SECRET and ep.served_models == ["echo", "llama"] and ep.weight == 3
    r = web.post(f"/admin/llmqueue/endpoint/{ep.pk}/change/", {**form, "clear_api_key": "on"})
    ep.refresh_from_db()
    assert ep.api_key == ""


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "0",
        "HTTPS": "1",
        "SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
        "ALLOWED_HOSTS": "llmqueue.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
