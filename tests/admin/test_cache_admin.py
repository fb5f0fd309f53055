"""Operating the cache: warming (service, command, admin page) and the cache entries admin."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from llmqueue.cache import StoreItem, cache_store_many
from llmqueue.errors import SubmitError
from llmqueue.jobs.warm import cache_warm, warm_specs, warm_status
from llmqueue.models import CacheEntry, Job
from tests.cache.test_store import run_due
from tests.factories import chat_payload, make_user

pytestmark = pytest.mark.django_db

LINES = [
    json.dumps({"kind": "chat", "payload": chat_payload("one"), "cache_ttl": 600}),
    json.dumps(
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "echo", "input": "two"},
        }
    ),
    "",
    json.dumps({"model": "echo", "prompt": "three"}),
    json.dumps(chat_payload("one")),  # the same request as line 1: it follows line 1's job
]


def jsonl(lines=LINES) -> bytes:
    return ("\n".join(lines) + "\n").encode()


# --- the service ----------------------------------------------------------------------------------


def test_lines_of_every_shape_become_specs():
    specs = warm_specs(jsonl().splitlines(keepends=True), priority=2)
    assert [s.kind for s in specs] == ["chat", "embedding", "completion", "chat"]
    assert [s.cache_ttl for s in specs] == [600, None, None, None]
    assert {s.priority for s in specs} == {2} and all(s.cache for s in specs)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "line 2: Expecting property name"),
        ("[1]", "line 2: must be a JSON object"),
        (json.dumps({"payload": {"model": "echo"}}), "line 2: messages: required"),
        (json.dumps({"body": {"model": "echo"}, "url": "/v1/images"}), "line 2: url: must be"),
        (json.dumps({"payload": chat_payload(), "cache_ttl": 0}), "line 2: cache_ttl"),
    ],
)
def test_a_bad_line_is_named(line, reason):
    with pytest.raises(SubmitError) as err:
        warm_specs([json.dumps(chat_payload()), line])
    assert str(err.value).startswith(reason)


def test_warming_submits_jobs_in_chunks_and_reports_progress(user, echo_endpoint, settings):
    settings.LLMQUEUE = {"MAX_BULK_JOBS": 2}
    seen = []
    report = cache_warm(
        owner=user,
        specs=warm_specs(jsonl().splitlines()),
        progress=lambda r: seen.append(r.submitted),
    )
    assert seen == [2, 4] and len(report.batches) == 2
    assert (report.queued, report.following, report.cached) == (3, 1, 0)
    assert Job.objects.filter(owner=user, priority=0).count() == 4
    run_due()
    assert warm_status(report.batches) == {
        "queued": 0,
        "running": 0,
        "succeeded": 4,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 4,
        "done": 4,
    }
    assert CacheEntry.objects.count() == 3
    again = cache_warm(owner=user, specs=warm_specs(jsonl().splitlines()))
    assert (again.cached, again.queued) == (4, 0)  # warming twice costs nothing


def test_warming_refuses_unserved_models_before_submitting_anything(user, echo_endpoint):
    specs = warm_specs([json.dumps(chat_payload("a")), json.dumps(chat_payload("b", model="x"))])
    with pytest.raises(SubmitError, match="'x'"):
        cache_warm(owner=user, specs=specs)
    assert not Job.objects.exists()


# --- the command ----------------------------------------------------------------------------------


def test_the_command_submits_and_prints_progress(tmp_path, user, echo_endpoint):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl())
    out = io.StringIO()
    call_command("llmqueue_cache_warm", str(path), "--user", user.username, stdout=out)
    text = out.getvalue()
    assert "submitted 4/4: 0 cached already, 1 following an identical job, 3 queued" in text
    assert Job.objects.filter(owner=user).count() == 4


def test_the_command_waits_until_done(tmp_path, user, echo_endpoint):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl())
    run_due()
    call_command("llmqueue_cache_warm", str(path), "--user", user.username, stdout=io.StringIO())
    run_due()
    out = io.StringIO()
    call_command("llmqueue_cache_warm", str(path), "--user", user.username, "--wait", stdout=out)
    assert "submitted 4/4: 4 cached already" in out.getvalue()
    assert "done 4/4: 4 succeeded, 0 dead" in out.getvalue()


def test_the_command_names_bad_input(tmp_path, user, echo_endpoint):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat_payload()) + "\n{oops\n")
    with pytest.raises(CommandError, match=r"line 2: .*nothing was submitted"):
        call_command("llmqueue_cache_warm", str(path), "--user", user.username)
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("llmqueue_cache_warm", str(path), "--user", "nobody")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("llmqueue_cache_warm", str(tmp_path / "missing"), "--user", user.username)
    assert not Job.objects.exists()


# --- the admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def entries(now=None):
    now = now or timezone.now()
    owner = make_user()
    for i, (model, ttl) in enumerate([("alpha", 3600), ("beta", 3600), ("beta", 1)]):
        cache_store_many(
            [StoreItem(key=f"user:{owner.pk}/{i:064x}", kind="chat", model=model, response={})],
            now=now - dt.timedelta(seconds=10) if ttl == 1 else now,
        )
        if ttl == 1:
            CacheEntry.objects.filter(model=model, key__endswith=f"{i:064x}").update(
                expires_at=now - dt.timedelta(seconds=1)
            )
    CacheEntry.objects.filter(model="alpha").update(hits=12)
    return owner


def test_the_changelist_searches_and_filters(admin_client):
    entries()
    url = reverse("admin:llmqueue_cacheentry_changelist")
    page = admin_client.get(url).content.decode()
    assert "Warm from JSONL" in page and "Purge expired" in page and "3 cache entries" in page
    assert "1 cache entry" in admin_client.get(url, {"q": "alpha"}).content.decode()
    assert "1 cache entry" in admin_client.get(url, {"hits": "10"}).content.decode()
    assert "2 cache entries" in admin_client.get(url, {"hits": "0"}).content.decode()
    assert "1 cache entry" in admin_client.get(url, {"expiry": "expired"}).content.decode()
    assert "2 cache entries" in admin_client.get(url, {"expiry": "later"}).content.decode()
    one = CacheEntry.objects.first()
    detail = admin_client.get(reverse("admin:llmqueue_cacheentry_change", args=[one.pk]))
    assert detail.status_code == 200


def test_purge_selected_and_purge_expired(admin_client):
    entries()
    url = reverse("admin:llmqueue_cacheentry_changelist")
    alpha = CacheEntry.objects.get(model="alpha")
    r = admin_client.post(url, {"action": "purge_selected", "_selected_action": [alpha.pk]})
    assert r.status_code == 302 and not CacheEntry.objects.filter(model="alpha").exists()
    r = admin_client.post(reverse("admin:llmqueue_cacheentry_purge"))
    assert r.status_code == 302
    assert list(CacheEntry.objects.values_list("model", flat=True)) == ["beta"]
    assert CacheEntry.objects.get().expires_at > timezone.now()


def test_warm_from_an_upload_then_watch_it(admin_client, staff, echo_endpoint):
    url = reverse("admin:llmqueue_cacheentry_warm")
    assert "Warm from a JSONL file" in admin_client.get(url).content.decode()
    upload = SimpleUploadedFile("requests.jsonl", jsonl(), content_type="application/jsonl")
    r = admin_client.post(url, {"file": upload, "user": staff.username, "priority": 3})
    assert r.status_code == 302 and "?batches=" in r["Location"]
    assert Job.objects.filter(owner=staff, priority=3).count() == 4
    page = admin_client.get(r["Location"]).content.decode()
    assert "0 of 4 done" in page and 'http-equiv="refresh"' in page
    run_due()
    page = admin_client.get(r["Location"]).content.decode()
    assert "4 of 4 done" in page and 'http-equiv="refresh"' not in page
    batch = Job.objects.filter(owner=staff).first().batch_id
    jobs = admin_client.get(reverse("admin:llmqueue_job_changelist"), {"batch__id__exact": batch})
    assert jobs.status_code == 200


def test_warm_upload_errors_submit_nothing(admin_client, staff, echo_endpoint):
    url = reverse("admin:llmqueue_cacheentry_warm")
    bad = SimpleUploadedFile("bad.jsonl", b"{oops\n")
    page = admin_client.post(url, {"file": bad, "user": staff.username, "priority": 0})
    assert page.status_code == 200 and "line 1:" in page.content.decode()
    other = make_user()
    upload = SimpleUploadedFile("r.jsonl", jsonl())
    page = admin_client.post(url, {"file": upload, "user": other.username, "priority": 0})
    assert page.status_code == 302  # staff is a superuser in the factory: allowed
    assert Job.objects.filter(owner=other).count() == 4


def test_only_a_superuser_warms_for_someone_else(client, echo_endpoint):
    from django.contrib.auth.models import Permission

    clerk = make_user(staff=False)
    clerk.is_staff = True
    clerk.save()
    clerk.user_permissions.add(Permission.objects.get(codename="view_cacheentry"))
    client.force_login(clerk)
    other = make_user()
    upload = SimpleUploadedFile("r.jsonl", jsonl())
    page = client.post(
        reverse("admin:llmqueue_cacheentry_warm"),
        {"file": upload, "user": other.username, "priority": 0},
    )
    assert "only a superuser" in page.content.decode() and not Job.objects.exists()
