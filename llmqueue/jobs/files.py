"""Files: what a user uploads for a batch, and the output and error files a batch leaves.

Their bytes live in Django's default storage (``STORAGES["default"]``: the file system under
``MEDIA_ROOT`` unless configured otherwise), their rows in the File table. An upload is at most
``LLMQUEUE_FILE_MAX_BYTES``; the edge refuses a larger body before reading it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.core.files import File as DjangoFile
from django.db import transaction
from django.db.models import QuerySet

from llmqueue.conf import conf
from llmqueue.errors import SubmitError
from llmqueue.models import File

#: what a user may upload a file for (OpenAI's other purposes have no use here)
UPLOAD_PURPOSES = ("batch",)
#: what a batch's output and error files are
OUTPUT_PURPOSE = "batch_output"
FILENAME_MAX = 255


def file_max_bytes() -> int:
    return int(conf.FILE_MAX_BYTES)


def file_create(*, owner: Any, filename: str, purpose: str, content: IO[bytes], size: int) -> File:
    """Store an upload of ``size`` bytes as a File of ``owner``. Raises SubmitError (by field)
    for an unknown purpose, a file over the limit, or an empty one."""
    if purpose not in UPLOAD_PURPOSES:
        raise SubmitError(
            "purpose", f"must be one of {', '.join(UPLOAD_PURPOSES)}; got {purpose!r}"
        )
    if size > file_max_bytes():
        raise SubmitError(
            "file", f"is {size} bytes; the limit is {file_max_bytes()} (LLMQUEUE_FILE_MAX_BYTES)"
        )
    if size == 0:
        raise SubmitError("file", "is empty")
    return _store(owner_id=owner.pk, filename=filename, purpose=purpose, content=content, size=size)


def _store(*, owner_id: int, filename: str, purpose: str, content: IO[bytes], size: int) -> File:
    name = (filename or "upload.jsonl").replace("/", "_").replace("\\", "_")[-FILENAME_MAX:]
    row = File(owner_id=owner_id, purpose=purpose, filename=name, size_bytes=size)
    # The storage picks the path (upload_to, a unique name): a user's name never steers it.
    row.content.save(name, DjangoFile(content, name=name), save=False)
    try:
        row.save()
    except Exception:
        row.content.delete(save=False)
        raise
    return row


def file_write_lines(*, owner_id: int, filename: str, lines: Iterable[bytes]) -> File:
    """A produced file (a batch's output or error file) of these lines, spooled to disk past
    a few megabytes rather than held in memory."""
    with tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024) as buffer:
        for line in lines:
            buffer.write(line)
        size = buffer.tell()
        buffer.seek(0)
        return _store(
            owner_id=owner_id, filename=filename, purpose=OUTPUT_PURPOSE, content=buffer, size=size
        )


def file_open(file: File) -> IO[bytes]:
    """The stored file, open for reading (its lines, with their newline, as they are needed);
    close it, e.g. with ``with``."""
    handle: IO[bytes] = file.content.storage.open(file.content.name or "", "rb")
    return handle


def file_chunks(file: File) -> Iterator[bytes]:
    """The stored file's bytes in chunks, for a download."""
    with file.content.open("rb") as handle:
        yield from iter(lambda: handle.read(64 * 1024), b"")


def file_delete(*, file_id: int) -> None:
    """Delete the row, then its bytes once that committed (a batch that used it keeps its
    jobs; its reference becomes null)."""
    row = File.objects.get(pk=file_id)
    name = row.content.name or ""
    storage = row.content.storage
    with transaction.atomic():
        row.delete()
        transaction.on_commit(lambda: storage.delete(name))


def files_of(*, owner: Any, purpose: str | None = None) -> QuerySet[File]:
    """A user's files, newest first (another user's are simply not there)."""
    qs = File.objects.filter(owner=owner).order_by("-id")
    return qs.filter(purpose=purpose) if purpose else qs
