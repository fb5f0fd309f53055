from django.urls import path

from llmqueue.web import demo, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_new, name="job-new"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job-retry"),
    path("demo/v1/chat/completions", demo.demo_call, {"kind": "chat"}),
    path("demo/v1/completions", demo.demo_call, {"kind": "completion"}),
    path("demo/v1/embeddings", demo.demo_call, {"kind": "embedding"}),
    path("demo/v1/models", demo.demo_models),
]
