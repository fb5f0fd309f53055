"""The Files API as the ``openai`` SDK calls it: ``client.files.create / list / retrieve /
delete / content``. Uploads are for batches (purpose ``batch``, at most
``LLMQUEUE_FILE_MAX_BYTES``); a batch's output and error files are listed here too (purpose
``batch_output``). Each user sees only their own files: another's id is a 404."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse

from llmqueue.jobs.files import file_chunks, file_create, file_delete, file_max_bytes, files_of
from llmqueue.models import File
from llmqueue.openai.errors import OpenAIError, not_found
from llmqueue.openai.shapes import cursor_page, epoch, list_of, pk_of
from llmqueue.openai.shapes import v1_view as view

PREFIX = "file-"


def file_object(file: File) -> dict[str, Any]:
    return {
        "id": f"{PREFIX}{file.pk}",
        "object": "file",
        "bytes": file.size_bytes,
        "created_at": epoch(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def file_of(user: Any, ident: str) -> File:
    """The caller's file of this id; 404 for any other."""
    found = files_of(owner=user).filter(pk=pk_of(ident, PREFIX, "File")).first()
    if found is None:
        raise not_found("File", ident)
    return found


def _upload(request: HttpRequest, user: Any) -> JsonResponse:
    limit = file_max_bytes()
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + 64 * 1024:  # refused before the body is read
        raise OpenAIError(
            413,
            f"The request is {length} bytes; a file may be at most {limit} bytes.",
            param="file",
            code="file_too_large",
        )
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise OpenAIError(
            400, "Send multipart/form-data with a file and its purpose.", param="file"
        )
    upload = request.FILES.get("file")
    if upload is None:
        raise OpenAIError(400, "file: required, the file to upload", param="file")
    purpose = request.POST.get("purpose", "")
    stored = file_create(
        owner=user,
        filename=upload.name or "",
        purpose=purpose,
        content=upload,
        size=upload.size or 0,
    )
    return JsonResponse(file_object(stored))


@view("GET", "POST")
def files(request: HttpRequest, user: Any) -> HttpResponseBase:
    if request.method == "POST":
        return _upload(request, user)
    qs = files_of(owner=user, purpose=request.GET.get("purpose") or None)
    rows, more = cursor_page(
        qs, request, prefix=PREFIX, what="File", default_limit=10000, max_limit=10000
    )
    return JsonResponse(list_of([file_object(f) for f in rows], has_more=more))


@view("GET", "DELETE")
def file(request: HttpRequest, user: Any, ident: str) -> JsonResponse:
    found = file_of(user, ident)
    if request.method == "DELETE":
        file_delete(file_id=found.pk)
        return JsonResponse({"id": ident, "object": "file", "deleted": True})
    return JsonResponse(file_object(found))


@view("GET")
def file_content(request: HttpRequest, user: Any, ident: str) -> StreamingHttpResponse:
    found = file_of(user, ident)
    answer = StreamingHttpResponse(file_chunks(found), content_type="application/octet-stream")
    answer["Content-Length"] = str(found.size_bytes)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", found.filename) or "file"
    answer["Content-Disposition"] = f'attachment; filename="{safe}"'
    return answer
