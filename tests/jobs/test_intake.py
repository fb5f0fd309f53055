"""The intake: one validation of a job spec, and one size limit that every edge applies."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from llmqueue.errors import SubmitError
from llmqueue.jobs.intake import job_spec_check
from llmqueue.jobs.validation import payload_size
from llmqueue.jobs.warm import warm_specs
from llmqueue.models import Job
from llmqueue.web.batch_upload import batch_file_parse
from tests.factories import chat_payload

pytestmark = pytest.mark.django_db

LIMIT = 2048
#: the limit's one sentence, as every edge shows it
OVER = f"the limit is {LIMIT} bytes"


def test_a_valid_spec_comes_back_with_every_value():
    spec, problems = job_spec_check(
        kind="embedding",
        payload={"model": "echo", "input": "x"},
        priority=9,
        max_attempts=3,
        idempotency_key="k",
        cache=False,
        cache_ttl=60,
        custom_id="c",
    )
    assert problems == {}
    assert spec is not None
    assert (spec.kind, spec.priority, spec.max_attempts, spec.idempotency_key) == (
        "embedding",
        9,
        3,
        "k",
    )
    assert (spec.cache, spec.cache_ttl, spec.custom_id) == (False, 60, "c")


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"kind": "image"}, "kind", "'image' is not a valid choice"),
        ({"priority": 10}, "priority", "less than or equal to 9"),
        ({"priority": -1}, "priority", "greater than or equal to 0"),
        ({"priority": True}, "priority", "must be an integer"),
        ({"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"max_attempts": 21}, "max_attempts", "at most 20"),
        ({"idempotency_key": ""}, "idempotency_key", "non-empty string"),
        ({"idempotency_key": "k" * 201}, "idempotency_key", "at most 200"),
        ({"cache": "yes"}, "cache", "true or false"),
        ({"cache_ttl": 0}, "cache_ttl", "greater than or equal to 1"),
        ({"cache_ttl": 86401}, "cache_ttl", "at most 86400"),
        ({"payload": {"model": "echo"}}, "payload", "messages: required"),
        ({"payload": "hi"}, "payload", "must be a JSON object"),
        ({"payload": chat_payload("x" * 3000)}, "payload", "payload: is 30"),
    ],
)
def test_every_bad_value_is_named_by_its_field(settings, change, field, fragment):
    settings.LLMQUEUE = {"MAX_PAYLOAD_BYTES": LIMIT}
    spec, problems = job_spec_check(**{"kind": "chat", "payload": chat_payload(), **change})
    assert spec is None and list(problems) == [field], problems
    assert fragment in " ".join(problems[field])


def test_the_size_can_be_left_to_the_edge(settings):
    settings.LLMQUEUE = {"MAX_PAYLOAD_BYTES": LIMIT}
    spec, problems = job_spec_check(kind="chat", payload=chat_payload("x" * 3000), size=False)
    assert spec is not None and problems == {}


# --- the one size limit, at every edge ------------------------------------------------------------


def test_the_form_refuses_a_request_over_the_limit_on_its_message_field(
    web, settings, echo_endpoint
):
    settings.LLMQUEUE = {"MAX_PAYLOAD_BYTES": LIMIT}
    form = {"kind": "chat", "model": "echo", "parameters": "{}", "priority": 5}
    r = web.post("/jobs/new/", {**form, "prompt": "x" * 3000})
    assert r.status_code == 200 and not Job.objects.exists()
    errors = r.context["form"].errors
    assert list(errors) == ["prompt"], errors
    assert OVER in errors["prompt"][0] and "shorten the message" in errors["prompt"][0]
    # just under the limit, the same form queues its job
    r = web.post("/jobs/new/", {**form, "prompt": "x" * (LIMIT - 200)})
    assert r.status_code == 302 and Job.objects.count() == 1


def test_every_edge_applies_the_same_limit(api, web, settings, echo_endpoint):
    settings.LLMQUEUE = {"MAX_PAYLOAD_BYTES": LIMIT}
    big = chat_payload("x" * 3000)
    r = api.post("/api/jobs/", {"payload": big}, format="json")
    assert r.status_code == 413 and OVER in json.dumps(r.json())
    r = api.post(
        "/api/jobs/bulk/",
        {"jobs": [{"payload": chat_payload()}] * 2 + [{"payload": big}]},
        format="json",
    )
    assert r.status_code == 413 and OVER in json.dumps(r.json()["jobs[2].payload"])
    line = json.dumps(big).encode()  # with spaces: the limit counts the compact payload
    said = f"line 1: payload: is {payload_size(big)} bytes; {OVER}"
    assert [str(e) for e in batch_file_parse([line]).errors] == [said]
    file = SimpleUploadedFile("big.jsonl", line + b"\n", content_type="application/jsonl")
    page = web.post("/batches/new/", {"file": file, "priority": 5}).content.decode()
    assert said in page
    with pytest.raises(SubmitError, match=said):
        warm_specs([line])
    assert not Job.objects.exists()
