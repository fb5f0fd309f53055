"""The environment switches that project/settings.py reads, parsed strictly.

A value that does not parse (``DEBUG=ture``, ``CONN_MAX_AGE=6O``) must not quietly become
the default: it is recorded in ``problems`` and the default is used only so that the settings
still import; ``llmqueue.checks`` then fails ``manage.py check`` (and with it ``runserver``,
``qcluster`` and every command that runs the checks) naming the variable, its value and what
it should look like. Raising here instead would show a traceback before Django can say which
setting is wrong, and would hide every other problem behind the first.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclasses.dataclass(frozen=True)
class EnvProblem:
    name: str
    value: str
    reason: str
    hint: str


#: every switch that did not parse, in the order settings read them
problems: list[EnvProblem] = []


def parse_bool(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case, or empty for false); else ValueError."""
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean")


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse_bool(raw)
    except ValueError as exc:
        problems.append(EnvProblem(name, raw, str(exc), "Use 1/true/yes/on or 0/false/no/off."))
        return default


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        hint = f"A whole number, e.g. {default}."
        problems.append(EnvProblem(name, raw, f"{raw!r} is not a whole number", hint))
        return default
    if value < minimum:
        hint = f"A whole number, e.g. {default}."
        problems.append(EnvProblem(name, raw, f"must be at least {minimum}", hint))
        return default
    return value


def env_choice(name: str, default: str, choices: Iterable[str]) -> str:
    raw = os.environ.get(name)
    if raw is None:
        return default
    allowed = list(choices)
    if raw.strip().upper() in allowed:
        return raw.strip().upper()
    problems.append(
        EnvProblem(name, raw, f"{raw!r} is not one of the choices", f"One of {', '.join(allowed)}.")
    )
    return default
