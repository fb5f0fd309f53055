"""JSONL files of requests, read into job specs or into the reasons each line cannot be one.

The one parser of the intake: batch uploads (``/batches/new/``) and cache warming (the admin
page and ``manage.py llmqueue_cache_warm``) both read their files here. A line is one of:

    {"model": "m", "messages": [...]}                  an OpenAI request body; the kind
                                                       follows from messages, prompt or input
    {"custom_id": "r1", "method": "POST",              an OpenAI Batch API input line; the
     "url": "/v1/chat/completions", "body": {...}}     kind follows from the url
    {"kind": "chat", "payload": {...},                 llmqueue's own shape (``cache_ttl``
     "cache_ttl": 600}                                 optional, in seconds)

Any line may carry ``deadline`` (ISO 8601) or ``expires_in`` (seconds): its job's own deadline,
in place of the file's.

Every bad line is reported with its number, the field and the reason (``LineError``); the
caller decides what a bad line means (an upload lists them all, warming stops at the first).
Blank lines are skipped. Each line's spec is checked by ``job_spec_check``, like any job's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from llmqueue.calls.paths import kind_of_path, v1_paths
from llmqueue.conf import conf
from llmqueue.jobs.intake import PAYLOAD, JobSpec, job_spec_check
from llmqueue.models import Kind

#: a request body's key -> the kind it implies
BODY_KINDS = (("messages", Kind.CHAT), ("prompt", Kind.COMPLETION), ("input", Kind.EMBEDDING))
#: how many problems a page lists before "and N more"
SHOWN_PROBLEMS = 50
#: room around a payload for the line's own keys (custom_id, url...); a longer line is refused
#: before it is decoded
LINE_SLACK_BYTES = 64 * 1024
CUSTOM_ID_MAX = 200


@dataclasses.dataclass(frozen=True)
class LineError:
    """Why one line is not a job: its number (0: the file as a whole), the field ("" for the
    line as a whole), and the reason. ``detail`` holds a decoder's own words, when there are any."""

    line: int
    field: str
    reason: str
    detail: str = ""

    @property
    def message(self) -> str:
        """The reason with its field and detail, without the line number."""
        text = f"{self.field}: {self.reason}" if self.field else self.reason
        return f"{text} ({self.detail})" if self.detail else text

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclasses.dataclass
class JsonlFile:
    """A parsed file: the specs of its good lines, and an error for each bad one."""

    specs: list[JobSpec] = dataclasses.field(default_factory=list)
    errors: list[LineError] = dataclasses.field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every error as "line N: field: reason", in line order."""
        return [str(e) for e in self.errors]

    def summary(self) -> list[str]:
        shown = self.problems[:SHOWN_PROBLEMS]
        more = len(self.errors) - len(shown)
        return [*shown, f"and {more} more problems"] if more > 0 else shown


#: (field, reason) pairs of one line
Problems = list[tuple[str, str]]


def _split(problem: str) -> tuple[str, str]:
    """A "path: reason" string of the validation rules, as (path, reason)."""
    field, sep, reason = problem.partition(": ")
    return (field, reason) if sep and " " not in field else ("", problem)


def _request(line: dict[str, Any]) -> tuple[dict[str, Any], Problems]:
    """The keyword arguments of ``job_spec_check`` that one decoded line asks for."""
    if "payload" in line:
        return {
            "kind": line.get("kind", Kind.CHAT),
            "payload": line["payload"],
            "cache_ttl": line.get("cache_ttl"),
            "custom_id": line.get("custom_id", ""),
        }, []
    if "body" in line:
        method = line.get("method", "POST")
        if method != "POST":
            return {}, [("method", f"must be POST, not {method!r}")]
        kind = kind_of_path(line.get("url"))
        if kind is None:
            urls = ", ".join(v1_paths())
            return {}, [("url", f"must be one of {urls}; got {line.get('url')!r}")]
        return {"kind": kind, "payload": line["body"], "custom_id": line.get("custom_id", "")}, []
    kind = next((k for key, k in BODY_KINDS if key in line), None)
    if kind is None:
        reason = (
            "cannot tell the kind: a request body needs messages (chat), prompt "
            "(completion) or input (embedding), or use the Batch API line format"
        )
        return {}, [("", reason)]
    return {"kind": kind, "payload": line}, []


def jsonl_line_parse(
    line: dict[str, Any],
    *,
    served: set[str] | None = None,
    url: str | None = None,
    **common: Any,
) -> tuple[JobSpec | None, Problems]:
    """One decoded line: (a spec, []) or (None, [(field, reason), ...]).

    ``common`` are the file's settings for every job (priority, max_attempts, deadline);
    ``served``, when given, refuses a model no enabled endpoint serves (else submission decides
    it); ``url``, when given, is the one path every line must name (a Batch API batch's)."""
    request, problems = _request(line)
    if problems:
        return None, problems
    if url is not None and (line.get("url") != url or "body" not in line):
        got = line.get("url")
        return None, [("url", f"must be {url}, the batch's endpoint; got {got!r}")]
    if "deadline" in line or "expires_in" in line:
        common = {**common, "deadline": line.get("deadline"), "expires_in": line.get("expires_in")}
    custom_id = request.pop("custom_id", "")
    if not isinstance(custom_id, str | int) or len(str(custom_id)) > CUSTOM_ID_MAX:
        return None, [("custom_id", f"must be a string of at most {CUSTOM_ID_MAX} characters")]
    spec, found = job_spec_check(**request, **common, custom_id=str(custom_id))
    if spec is None:
        return None, [
            _split(p) if field == PAYLOAD else (field, p)
            for field, reasons in found.items()
            for p in reasons
        ]
    model = spec.payload["model"]
    if served is not None and model not in served:
        listed = ", ".join(sorted(served)) or "none"
        return None, [("model", f"no enabled endpoint serves {model!r}; served models: {listed}")]
    return spec, []


def _decode(raw: bytes | str, *, first: bool) -> tuple[Any, str, str]:
    """(the line's JSON value, "", "") or (None, why not, the decoder's words); (None, "", "")
    for a blank line."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig" if first else "utf-8")  # a BOM may start a file
        except UnicodeDecodeError:
            return None, "not UTF-8 text", ""
    if not raw.strip():
        return None, "", ""
    try:
        value = json.loads(raw)
    except ValueError as exc:  # json.JSONDecodeError is one
        return None, "not JSON", str(exc)
    return (value, "", "") if isinstance(value, dict) else (None, "must be a JSON object", "")


def jsonl_parse(
    lines: Iterable[bytes | str],
    *,
    served: set[str] | None = None,
    max_lines: int | None = None,
    url: str | None = None,
    **common: Any,
) -> JsonlFile:
    """Read a whole file (any iterable of lines, e.g. an UploadedFile or an open file).

    ``common`` (priority, max_attempts) applies to every job; ``served`` as in
    ``jsonl_line_parse``; past ``max_lines`` requests the file is refused at that line.
    Two lines may not share a custom_id (a batch's results are matched by it)."""
    out = JsonlFile()
    longest = int(conf.MAX_PAYLOAD_BYTES) + LINE_SLACK_BYTES
    seen_ids: dict[str, int] = {}
    requests = 0
    for number, raw in enumerate(lines, start=1):
        if len(raw) > longest:
            out.errors.append(LineError(number, "", f"longer than {longest} bytes"))
            continue
        line, problem, detail = _decode(raw, first=number == 1)
        if line is None:
            if problem:
                out.errors.append(LineError(number, "", problem, detail))
            continue
        requests += 1
        if max_lines is not None and requests > max_lines:
            reason = f"the file has more than {max_lines} requests"
            out.errors.append(LineError(number, "", reason))
            break
        spec, problems = jsonl_line_parse(line, served=served, url=url, **common)
        if spec is not None and spec.custom_id:
            if spec.custom_id in seen_ids:
                first = seen_ids[spec.custom_id]
                problems = [("custom_id", f"{spec.custom_id!r} is also on line {first}")]
            seen_ids.setdefault(spec.custom_id, number)
        out.errors.extend(LineError(number, field, reason) for field, reason in problems)
        if not problems and spec is not None:
            out.specs.append(spec)
    return out
