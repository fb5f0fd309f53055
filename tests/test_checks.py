"""Strict settings: an unknown LLMQUEUE_* name or a value that does not parse fails the checks,
naming the variable, with a hint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llmqueue.checks import check_settings
from tests.fixtures import ROOT


def errors_for(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> list[tuple[str, str, str]]:
    monkeypatch.setenv(name, value)
    return [(e.id, e.msg, e.hint) for e in check_settings()]


def test_the_project_as_configured_passes() -> None:
    assert check_settings() == []


def test_an_unknown_name_is_an_error_with_the_nearest_known_name(monkeypatch) -> None:
    [(code, msg, hint)] = errors_for(monkeypatch, "LLMQUEUE_DRAIN_CONCURENCY", "8")
    assert code == "llmqueue.E014"
    assert "LLMQUEUE_DRAIN_CONCURENCY" in msg
    assert hint == "Did you mean LLMQUEUE_DRAIN_CONCURRENCY?"


def test_a_name_like_no_other_gets_a_pointer_to_the_list(monkeypatch) -> None:
    [(code, _, hint)] = errors_for(monkeypatch, "LLMQUEUE_FLUX_CAPACITOR", "1")
    assert code == "llmqueue.E014"
    assert "llmqueue/conf.py" in hint


def test_an_unknown_key_of_the_llmqueue_setting_is_an_error(settings) -> None:
    settings.LLMQUEUE = {"MAX_ATTEMPT": 3}
    [error] = check_settings()
    assert (error.id, error.hint) == ("llmqueue.E014", "Did you mean MAX_ATTEMPTS?")


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("LLMQUEUE_CACHE_ENABLED", "ture", "Use 1/true/yes/on or 0/false/no/off."),
        ("LLMQUEUE_MAX_ATTEMPTS", "1O", "A whole number, e.g. 5."),
        ("LLMQUEUE_LEASE_S", "3O", "A number, e.g. 30.0."),
        ("LLMQUEUE_BALANCER_BY_MODEL", "{not json", "A JSON object"),
    ],
    ids=["bool", "int", "float", "json"],
)
def test_a_value_that_does_not_parse_is_an_error(monkeypatch, name, value, hint) -> None:
    [(code, msg, got_hint)] = errors_for(monkeypatch, name, value)
    assert code == "llmqueue.E015"
    assert name in msg and repr(value) in msg
    assert got_hint == hint


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", "0", "false", "No", "off", ""])
def test_every_spelling_of_a_boolean_parses(monkeypatch, value) -> None:
    assert errors_for(monkeypatch, "LLMQUEUE_CACHE_ENABLED", value) == []


def manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DEBUG": "ture"}, "DEBUG='ture': 'ture' is not a boolean"),
        ({"HTTPS": "yes please"}, "HTTPS='yes please': 'yes please' is not a boolean"),
        ({"CONN_MAX_AGE": "6O"}, "CONN_MAX_AGE='6O': '6O' is not a whole number"),
        ({"LLMQUEUE_DRAIN_CONCURENCY": "8"}, "Did you mean LLMQUEUE_DRAIN_CONCURRENCY?"),
        ({"LLMQUEUE_DRAINS_PER_HOST": "1O"}, "LLMQUEUE_DRAINS_PER_HOST='1O'"),
    ],
    ids=["DEBUG", "HTTPS", "CONN_MAX_AGE", "unknown", "read-by-settings-too"],
)
def test_manage_py_check_fails_naming_the_variable(env, says) -> None:
    done = manage_check(**env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stderr
    assert "HINT:" in done.stderr
    assert done.stderr.count(next(iter(env))) == 1  # once, though settings and conf read it


def test_manage_py_check_passes_when_every_switch_parses() -> None:
    done = manage_check(DEBUG="0", HTTPS="false", LLMQUEUE_CACHE_ENABLED="yes")
    assert done.returncode == 0, done.stderr
