"""The API's own description: its root, its OpenAPI document and the offline docs pages."""

from __future__ import annotations

import re

import pytest
import yaml
from django.contrib.staticfiles import finders

from tests.factories import chat_payload

pytestmark = pytest.mark.django_db


def test_the_api_root_links_the_api_not_the_pages(api):
    links = api.get("/api/", HTTP_ACCEPT="application/json").json()
    assert links["jobs"].endswith("/api/jobs/")
    assert links["endpoints"].endswith("/api/endpoints/")


@pytest.fixture
def document(api):
    r = api.get("/api/schema/")
    assert r.status_code == 200
    return yaml.safe_load(r.content)


def test_the_document_says_what_the_api_answers(document):
    job = document["components"]["schemas"]["Job"]["properties"]
    assert job["endpoint"]["nullable"] and job["batch"]["nullable"]
    bulk = document["paths"]["/api/jobs/bulk/"]["post"]
    assert "parameters" not in bulk or all(p["name"] != "page" for p in bulk["parameters"])
    created = bulk["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert set(document["components"]["schemas"][created.rsplit("/", 1)[1]]["properties"]) == {
        "batch",
        "jobs",
    }
    submit = document["paths"]["/api/jobs/"]["post"]
    assert set(submit["requestBody"]["content"]) == {"application/json"}
    for code in ("400", "401", "413", "429"):
        assert code in submit["responses"], code
    assert {"Retry-After", "X-RateLimit-Limit"} <= set(submit["responses"]["429"]["headers"])
    assert "409" in document["paths"]["/api/jobs/{id}/cancel/"]["post"]["responses"]
    for path in ("/api/stats/", "/api/usage/"):
        assert (
            "$ref"
            in document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
                "schema"
            ]
        ), path
    names = {p["name"] for p in document["paths"]["/api/jobs/"]["get"]["parameters"]}
    assert {"status", "batch", "model", "kind", "priority", "ordering", "page"} <= names


def test_form_encoded_bodies_are_refused(api, echo_endpoint):
    r = api.post("/api/jobs/", {"kind": "chat"}, format="multipart")
    assert r.status_code == 415
    assert api.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_are_served_offline(web, path):
    r = web.get(path)
    assert r.status_code == 200
    page = r.content.decode()
    assert not re.search(r"(src|href)=\"(https?:)?//", page), page
    for asset in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", page):
        if asset.startswith("/static/"):  # (fetched, a file response would stay open)
            assert finders.find(asset.removeprefix("/static/")), asset
        else:
            assert web.get(asset).status_code == 200, asset
