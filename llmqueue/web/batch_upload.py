"""JSONL batch files: each line one request, read into JobSpecs or into the reasons it cannot be.

Two line formats are accepted, and may be mixed:

    {"model": "m", "messages": [...]}                          an OpenAI request body; the
                                                               kind follows from messages,
                                                               prompt or input
    {"custom_id": "r1", "method": "POST",                      an OpenAI Batch API input line;
     "url": "/v1/chat/completions", "body": {...}}             the kind follows from the url

Every bad line is reported with its number and the reason, and a file with any bad line
queues nothing. Blank lines are skipped. At most ``BATCH_MAX_LINES`` requests per file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from llmqueue.conf import conf
from llmqueue.jobs import JobSpec, served_models
from llmqueue.jobs.validation import payload_problems
from llmqueue.models import Kind

#: the Batch API's url -> our kind (with or without the /v1 prefix)
URL_KINDS = {
    "/chat/completions": Kind.CHAT,
    "/completions": Kind.COMPLETION,
    "/embeddings": Kind.EMBEDDING,
}
#: a request body's key -> the kind it implies
BODY_KINDS = (("messages", Kind.CHAT), ("prompt", Kind.COMPLETION), ("input", Kind.EMBEDDING))
#: how many problems the page lists before "and N more"
SHOWN_PROBLEMS = 50


@dataclasses.dataclass
class BatchFile:
    specs: list[JobSpec] = dataclasses.field(default_factory=list)
    #: "line N: reason", in line order
    problems: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> list[str]:
        shown = self.problems[:SHOWN_PROBLEMS]
        more = len(self.problems) - len(shown)
        return [*shown, f"and {more} more problems"] if more > 0 else shown


def _kind_of_url(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    path = url.split("?", 1)[0].rstrip("/")
    if path.startswith("/v1/"):
        path = path[3:]
    return URL_KINDS.get(path)


def batch_line_parse(
    line: dict[str, Any], *, served: set[str], **spec: Any
) -> tuple[JobSpec | None, list[str]]:
    """One decoded line: (a spec, []) or (None, [reasons])."""
    custom_id = ""
    if "body" in line and isinstance(line.get("body"), dict):
        method = line.get("method", "POST")
        if method != "POST":
            return None, [f"method: must be POST, not {method!r}"]
        kind = _kind_of_url(line.get("url"))
        if kind is None:
            urls = ", ".join(f"/v1{u}" for u in URL_KINDS)
            return None, [f"url: must be one of {urls}; got {line.get('url')!r}"]
        raw_id = line.get("custom_id", "")
        if not isinstance(raw_id, str | int) or len(str(raw_id)) > 200:
            return None, ["custom_id: must be a string of at most 200 characters"]
        custom_id = str(raw_id)
        payload = line["body"]
    else:
        payload = line
        kind = next((k for key, k in BODY_KINDS if key in payload), None)
        if kind is None:
            return None, [
                "cannot tell the kind: a request body needs messages (chat), prompt "
                "(completion) or input (embedding), or use the Batch API line format"
            ]
    problems = payload_problems(kind, payload)
    model = payload.get("model")
    if not problems and model not in served:
        listed = ", ".join(sorted(served)) or "none"
        problems.append(f"model: no enabled endpoint serves {model!r}; served models: {listed}")
    if problems:
        return None, problems
    return JobSpec(kind=kind, payload=payload, custom_id=custom_id, **spec), []


def _decode(raw: bytes | str, *, first: bool) -> tuple[Any, str]:
    """(the line's JSON value, "") or (None, why not); (None, "") for a blank line."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig" if first else "utf-8")  # a BOM may start a file
        except UnicodeDecodeError:
            return None, "not UTF-8 text"
    if not raw.strip():
        return None, ""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    return (value, "") if isinstance(value, dict) else (None, "must be a JSON object")


def batch_file_parse(
    lines: Iterable[bytes | str], *, priority: int = 5, max_attempts: int | None = None
) -> BatchFile:
    """Read a whole file (any iterable of lines, e.g. an UploadedFile)."""
    out = BatchFile()
    served = set(served_models())
    limit_bytes = conf.MAX_PAYLOAD_BYTES
    limit_lines = int(conf.BATCH_MAX_LINES)
    seen_ids: dict[str, int] = {}
    requests = 0
    for number, raw in enumerate(lines, start=1):
        if len(raw) > limit_bytes:
            out.problems.append(f"line {number}: longer than {limit_bytes} bytes")
            continue
        line, problem = _decode(raw, first=number == 1)
        if line is None:
            if problem:
                out.problems.append(f"line {number}: {problem}")
            continue
        requests += 1
        if requests > limit_lines:
            out.problems.append(f"line {number}: the file has more than {limit_lines} requests")
            break
        spec, problems = batch_line_parse(
            line, served=served, priority=priority, max_attempts=max_attempts
        )
        if spec is not None and spec.custom_id:
            if spec.custom_id in seen_ids:
                first = seen_ids[spec.custom_id]
                problems = [f"custom_id: {spec.custom_id!r} is also on line {first}"]
            seen_ids.setdefault(spec.custom_id, number)
        out.problems.extend(f"line {number}: {p}" for p in problems)
        if not problems and spec is not None:
            out.specs.append(spec)
    if not out.specs and not out.problems:
        out.problems.append("the file holds no requests")
    return out
