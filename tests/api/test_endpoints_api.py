from __future__ import annotations

import pytest

from llmqueue.models import Endpoint

pytestmark = pytest.mark.django_db

NEW = {
    "name": "vllm-a",
    "base_url": "http://10.0.0.5:8000/v1/",
    "api_key": "sk-live-SECRET-123",
    "models": ["llama-3-8b"],
    "weight": 2,
    "max_concurrency": 32,
    "timeout_s": 60,
}


def test_staff_crud_and_the_key_is_write_only(staff_api):
    r = staff_api.post("/api/endpoints/", NEW, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert "api_key" not in body and "SECRET" not in r.content.decode()
    assert body["models"] == ["llama-3-8b"] and body["base_url"] == "http://10.0.0.5:8000/v1"
    assert (
        body["breaker_state"] == "closed" and body["healthy"] is True and body["latency_ms"] is None
    )
    assert Endpoint.objects.get().api_key == "sk-live-SECRET-123"
    pk = body["id"]
    r = staff_api.patch(f"/api/endpoints/{pk}/", {"weight": 5, "enabled": False}, format="json")
    assert r.status_code == 200 and r.json()["weight"] == 5 and r.json()["enabled"] is False
    assert Endpoint.objects.get().api_key == "sk-live-SECRET-123"  # untouched by a PATCH without it
    for url in ["/api/endpoints/", f"/api/endpoints/{pk}/", "/api/stats/"]:
        assert "SECRET" not in staff_api.get(url).content.decode()
    assert staff_api.delete(f"/api/endpoints/{pk}/").status_code == 204
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_url": "ftp://x/v1"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"models": []}, "models"),
        ({"weight": 0}, "weight"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"name": "has spaces"}, "name"),
    ],
)
def test_validation(staff_api, change, field):
    r = staff_api.post("/api/endpoints/", {**NEW, **change}, format="json")
    assert r.status_code == 400 and field in r.json(), r.content


def test_non_staff_get_403(api):
    assert api.get("/api/endpoints/").status_code == 403
    assert api.post("/api/endpoints/", NEW, format="json").status_code == 403
