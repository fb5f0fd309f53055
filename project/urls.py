from django.contrib import admin
from django.urls import include, path

from llmqueue.web import probes

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("llmqueue.api.urls")),
    path("v1/", include("llmqueue.openai.batch_urls")),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("metrics", probes.metrics, name="metrics"),
    path("", include("llmqueue.web.urls")),
]
