"""The /v1 routes, as OpenAI names them (no trailing slash: the SDKs send none)."""

from django.urls import path, re_path

from llmqueue.openai import batches, files, views

app_name = "openai"

urlpatterns = [
    path("models", views.models, name="models"),
    path("models/<path:name>", views.model, name="model"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("files", files.files, name="files"),
    path("files/<str:ident>", files.file, name="file"),
    path("files/<str:ident>/content", files.file_content, name="file-content"),
    path("batches", batches.batches, name="batches"),
    path("batches/<str:ident>", batches.batch, name="batch"),
    path("batches/<str:ident>/cancel", batches.batch_cancel_view, name="batch-cancel"),
    # last: any other /v1 path is a 404 in OpenAI's shape
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
