"""The /v1 routes, as OpenAI names them (no trailing slash: the SDKs send none)."""

from django.urls import path, re_path

from llmqueue.openai import views

app_name = "openai"

urlpatterns = [
    path("models", views.models, name="models"),
    path("models/<path:name>", views.model, name="model"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
