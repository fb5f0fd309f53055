"""The endpoint service: one set of rules and words for the API and the admin."""

from __future__ import annotations

import html

import pytest

from llmqueue.endpoints.service import endpoint_create, endpoint_problems, endpoint_update
from llmqueue.errors import EndpointInvalid
from llmqueue.models import Endpoint
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

KEY = "sk-live-SECRET-123"
GOOD = {
    "name": "vllm-a",
    "base_url": "http://10.0.0.5:8000/v1/",
    "models": ["llama"],
    "weight": 2,
    "max_concurrency": 32,
    "timeout_s": 60.0,
}

#: (field, a bad value as the API sends it, the same as the admin's form field sends it)
BAD = [
    ("name", "has spaces", "has spaces"),
    ("name", "taken", "taken"),
    ("base_url", "ftp://x/v1", "ftp://x/v1"),
    ("base_url", "not a url", "not a url"),
    ("base_url", "http://", "http://"),
    ("models", [], " , "),
    ("models", ["x" * 201], "x" * 201),
    ("weight", 0, "0"),
    ("weight", 1001, "1001"),
    ("max_concurrency", 0, "0"),
    ("max_concurrency", 10001, "10001"),
    ("rpm_limit", 0, "0"),
    ("tpm_limit", -5, "-5"),
    ("timeout_s", 0, "0"),
    ("timeout_s", 3601, "3601"),
]
#: the admin form's name of a setting, where it differs from the API's
FORM_FIELD = {"models": "served_models"}


def admin_post(admin_web, field, value, *, pk=None):
    form = {
        "name": "vllm-b" if pk is None else "taken",
        "base_url": "http://h.example/v1",
        "served_models": "llama",
        "weight": 1,
        "max_concurrency": 8,
        "timeout_s": 60,
        "enabled": "on",
        FORM_FIELD.get(field, field): value,
    }
    url = (
        "/admin/llmqueue/endpoint/add/" if pk is None else f"/admin/llmqueue/endpoint/{pk}/change/"
    )
    return admin_web.post(url, form)


@pytest.mark.parametrize(("field", "api_value", "form_value"), BAD)
def test_the_api_and_the_admin_refuse_alike_in_the_same_words(
    staff_api, admin_web, field, api_value, form_value
):
    make_endpoint(name="taken")
    expected = endpoint_problems(values={**GOOD, field: api_value})[field]
    # creating
    r = staff_api.post("/api/endpoints/", {**GOOD, field: api_value}, format="json")
    assert r.status_code == 400 and r.json() == {field: expected}, r.content
    page = admin_post(admin_web, field, form_value)
    assert page.status_code == 200, "the admin saved a bad endpoint"
    errors = page.context["adminform"].form.errors
    assert errors == {FORM_FIELD.get(field, field): expected}
    assert html.escape(expected[0]) in page.content.decode()
    # changing one
    if field != "name":
        other = make_endpoint(name="vllm-c")
        r = staff_api.patch(f"/api/endpoints/{other.pk}/", {field: api_value}, format="json")
        assert r.status_code == 400 and r.json() == {field: expected}, r.content
    assert Endpoint.objects.count() == (1 if field == "name" else 2)


def test_create_and_update_through_the_service():
    endpoint = endpoint_create(api_key=KEY, **GOOD)
    assert endpoint.base_url == "http://10.0.0.5:8000/v1" and endpoint.served_models == ["llama"]
    # A worker writes the breaker meanwhile; a change of settings leaves that alone.
    Endpoint.objects.filter(pk=endpoint.pk).update(breaker_state="open", healthy=False)
    endpoint_update(endpoint_id=endpoint.pk, changes={"weight": 5, "models": [" a ", "", "b"]})
    endpoint.refresh_from_db()
    assert (endpoint.weight, endpoint.served_models) == (5, ["a", "b"])
    assert (endpoint.breaker_state, endpoint.healthy, endpoint.api_key) == ("open", False, KEY)
    endpoint_update(endpoint_id=endpoint.pk, changes={"api_key": ""})
    endpoint.refresh_from_db()
    assert endpoint.api_key == ""


def test_a_refused_change_changes_nothing_and_never_shows_the_key():
    endpoint = endpoint_create(api_key=KEY, **GOOD)
    with pytest.raises(EndpointInvalid) as err:
        endpoint_update(endpoint_id=endpoint.pk, changes={"weight": 0, "api_key": KEY * 40})
    assert set(err.value.problems) == {"weight", "api_key"}
    assert "SECRET" not in str(err.value)
    endpoint.refresh_from_db()
    assert endpoint.weight == 2 and endpoint.api_key == KEY
    with pytest.raises(EndpointInvalid) as err:
        endpoint_create(name="x", base_url="http://h.example/v1", models=[], api_key=KEY * 40)
    assert set(err.value.problems) == {"models", "api_key"} and "SECRET" not in str(err.value)


def test_the_admin_writes_through_the_service_and_keeps_the_key(admin_web):
    endpoint = endpoint_create(api_key=KEY, **GOOD)
    Endpoint.objects.filter(pk=endpoint.pk).update(breaker_state="open")
    page = admin_web.get(f"/admin/llmqueue/endpoint/{endpoint.pk}/change/").content.decode()
    assert "SECRET" not in page
    r = admin_web.post(
        f"/admin/llmqueue/endpoint/{endpoint.pk}/change/",
        {
            "name": "vllm-a",
            "base_url": "http://10.0.0.6:8000/v1/",
            "served_models": "llama, qwen",
            "weight": 3,
            "max_concurrency": 32,
            "timeout_s": 60,
            "enabled": "on",
        },
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    endpoint.refresh_from_db()
    assert endpoint.base_url == "http://10.0.0.6:8000/v1" and endpoint.weight == 3
    assert endpoint.served_models == ["llama", "qwen"] and endpoint.api_key == KEY
    assert endpoint.breaker_state == "open"  # not put back by a whole-row save
