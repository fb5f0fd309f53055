"""The one JSONL parser, read by batch uploads and by cache warming alike."""

from __future__ import annotations

import json

import pytest

from llmqueue.errors import SubmitError
from llmqueue.jobs import jsonl
from llmqueue.jobs.jsonl import LineError, jsonl_parse
from llmqueue.jobs.warm import warm_specs
from llmqueue.web import batch_upload
from llmqueue.web.batch_upload import batch_file_parse
from tests.factories import chat_payload

pytestmark = pytest.mark.django_db

#: one line of each shape
GOOD = [
    json.dumps(chat_payload("bare")),
    json.dumps(
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "echo", "input": "x"},
        }
    ),
    json.dumps({"kind": "completion", "payload": {"model": "echo", "prompt": "p"}}),
]
#: bad lines, and what the parser says of each: (field, reason fragment)
BAD = [
    ("{oops", "", "not JSON"),
    ("[1]", "", "must be a JSON object"),
    (json.dumps({"model": "echo"}), "", "cannot tell the kind"),
    (json.dumps({"model": "echo", "messages": []}), "messages", "required for kind 'chat'"),
    (json.dumps({"body": {}, "url": "/v1/images"}), "url", "must be one of /v1/chat/completions"),
    (json.dumps({"body": {}, "method": "GET", "url": "/v1/completions"}), "method", "POST"),
    (
        json.dumps({"payload": chat_payload(), "cache_ttl": 0}),
        "cache_ttl",
        "greater than or equal to 1",
    ),
    (
        json.dumps(
            {"custom_id": "b", "url": "/v1/embeddings", "body": {"model": "echo", "input": "y"}}
        ),
        "custom_id",
        "'b' is also on line 3",
    ),
]


def test_every_shape_becomes_the_same_specs_on_both_paths(echo_endpoint):
    uploaded = batch_file_parse(["", *GOOD], priority=3)
    warmed = warm_specs(["", *GOOD], priority=3)
    assert uploaded.errors == [] and uploaded.specs == warmed
    assert [s.kind for s in warmed] == ["chat", "embedding", "completion"]
    assert [s.custom_id for s in warmed] == ["", "b", ""] and {s.priority for s in warmed} == {3}


def test_bad_lines_are_named_by_line_field_and_reason_alike_on_both_paths(echo_endpoint):
    lines = ["", GOOD[0], GOOD[1], *[line for line, _, _ in BAD]]
    parsed = batch_file_parse(lines)
    assert [(e.line, e.field) for e in parsed.errors] == [
        (4 + i, field) for i, (_, field, _) in enumerate(BAD)
    ]
    for error, (_, _, fragment) in zip(parsed.errors, BAD, strict=True):
        assert fragment in error.reason, error
        assert str(error).startswith(f"line {error.line}: ")
    # Warming stops at the first of the same errors, with the same line number.
    for n, (line, field, fragment) in enumerate(BAD[:-1]):
        with pytest.raises(SubmitError) as err:
            warm_specs([GOOD[0], line])
        assert str(err.value).startswith("line 2: "), (n, err.value)
        if field:
            assert f"{field}: " in str(err.value) and fragment in str(err.value)


def test_both_paths_call_the_one_parser(monkeypatch, echo_endpoint):
    seen = []
    real = jsonl.jsonl_parse

    def spy(lines, **kw):
        seen.append(kw)
        return real(lines, **kw)

    monkeypatch.setattr("llmqueue.jobs.warm.jsonl_parse", spy)
    monkeypatch.setattr(batch_upload, "jsonl_parse", spy)
    warm_specs(GOOD)
    batch_file_parse(GOOD)
    assert len(seen) == 2
    # the upload refuses unserved models and long files as it reads; warming checks models
    # before it submits, and takes files of any length (in chunks)
    assert seen[1]["served"] == {"echo"} and seen[1]["max_lines"] == 50000
    assert "served" not in seen[0] and "max_lines" not in seen[0]


def test_a_line_error_reads_as_line_field_reason():
    assert str(LineError(7, "model", "required")) == "line 7: model: required"
    assert (
        str(LineError(2, "", "not JSON", "Expecting value")) == "line 2: not JSON (Expecting value)"
    )
    assert str(LineError(0, "", "the file holds no requests")) == "the file holds no requests"


def test_served_models_and_line_limits_are_the_callers_choice(echo_endpoint):
    lines = [json.dumps(chat_payload(model="gpt-9")), *GOOD]
    assert jsonl_parse(lines).errors == []
    parsed = jsonl_parse(lines, served={"echo"}, max_lines=2)
    assert [str(e) for e in parsed.errors] == [
        "line 1: model: no enabled endpoint serves 'gpt-9'; served models: echo",
        "line 3: the file has more than 2 requests",
    ]
