"""The Files and Batch APIs' routes, included under ``v1/`` (``project/urls.py``)."""

from django.urls import path

from llmqueue.openai import batches, files

urlpatterns = [
    path("files", files.files, name="v1-files"),
    path("files/<str:ident>", files.file, name="v1-file"),
    path("files/<str:ident>/content", files.file_content, name="v1-file-content"),
    path("batches", batches.batches, name="v1-batches"),
    path("batches/<str:ident>", batches.batch, name="v1-batch"),
    path("batches/<str:ident>/cancel", batches.batch_cancel_view, name="v1-batch-cancel"),
]
