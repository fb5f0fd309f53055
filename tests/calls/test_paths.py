"""The kind-to-path table: one source, read by every part that needs it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.urls import resolve

import llmqueue
from llmqueue.calls.paths import KIND_PATHS, kind_of_path, v1_paths
from llmqueue.models import Kind
from llmqueue.standin.server import ROUTES


def test_the_table_covers_every_kind():
    assert set(KIND_PATHS) == set(Kind.values)
    assert v1_paths() == ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("/v1/chat/completions", "chat"),
        ("/chat/completions", "chat"),
        ("/v1/completions/", "completion"),
        ("/v1/embeddings?x=1", "embedding"),
        ("/v1/images", None),
        ("/v2/embeddings", None),
        (None, None),
    ],
)
def test_a_path_names_its_kind(url, kind):
    assert kind_of_path(url) == kind


def test_the_stand_in_and_the_demo_answer_on_the_tables_paths():
    assert {f"/v1{path}": kind for kind, path in KIND_PATHS.items()} == ROUTES
    for kind, path in KIND_PATHS.items():
        assert resolve(f"/demo/v1{path}").kwargs == {"kind": kind}


def test_no_other_module_writes_a_path_of_its_own():
    """Any string in the package that is exactly one of the paths is a second copy."""
    paths = set(KIND_PATHS.values()) | set(v1_paths())
    root = Path(llmqueue.__file__).parent
    copies = []
    for source in root.rglob("*.py"):
        if source.name == "paths.py" and source.parent.name == "calls":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and node.value in paths:
                copies.append(f"{source.relative_to(root)}:{node.lineno} {node.value}")
    assert copies == []
