"""JSONL batch uploads: the page's settings on the intake's one JSONL parser.

The line formats and their checks are ``llmqueue.jobs.jsonl``'s (shared with cache warming).
An upload names every bad line, queues nothing when any line is bad, and holds at most
``BATCH_MAX_LINES`` requests; every model must be served when it is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from llmqueue.conf import conf
from llmqueue.jobs import served_models
from llmqueue.jobs.jsonl import JsonlFile, LineError, jsonl_parse

#: the file's one problem when it has no line at all (line 0: the file as a whole)
EMPTY = "the file holds no requests"


def batch_file_parse(
    lines: Iterable[bytes | str],
    *,
    priority: int = 5,
    max_attempts: int | None = None,
    deadline: dt.datetime | None = None,
) -> JsonlFile:
    """Read a whole uploaded file (any iterable of lines, e.g. an UploadedFile); ``deadline``
    is every job's, but for a line that names its own."""
    parsed = jsonl_parse(
        lines,
        served=set(served_models()),
        max_lines=int(conf.BATCH_MAX_LINES),
        priority=priority,
        max_attempts=max_attempts,
        deadline=deadline,
    )
    if not parsed.specs and not parsed.errors:
        parsed.errors.append(LineError(0, "", EMPTY))
    return parsed
