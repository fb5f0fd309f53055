from django.urls import path

from llmqueue.calls.paths import KIND_PATHS, V1
from llmqueue.web import batches, demo, keys, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/data/", views.dashboard_data, name="dashboard-data"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_new, name="job-new"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job-retry"),
    path("batches/", batches.batch_list, name="batch-list"),
    path("batches/new/", batches.batch_new, name="batch-new"),
    path("batches/<int:pk>/", batches.batch_detail, name="batch-detail"),
    path("batches/<int:pk>/progress/", batches.batch_progress, name="batch-progress"),
    path("batches/<int:pk>/results.jsonl", batches.batch_results, name="batch-results"),
    path("batches/<int:pk>/retry-dead/", batches.batch_retry_dead, name="batch-retry-dead"),
    path("batches/<int:pk>/cancel/", batches.batch_cancel_page, name="batch-cancel"),
    path("keys/", keys.key_list, name="key-list"),
    path("keys/<int:pk>/revoke/", keys.key_revoke, name="key-revoke"),
    *[path(f"demo{V1}{p}", demo.demo_call, {"kind": kind}) for kind, p in KIND_PATHS.items()],
    path("demo/v1/models", demo.demo_models),
]
