"""The REST API's routes, in the "api" namespace: the pages use the names job-list and
job-detail too, and without a namespace the API root linked ``jobs`` to the web page."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import DefaultRouter

from llmqueue.api.batches import BatchViewSet
from llmqueue.api.views import EndpointViewSet, JobViewSet, StatsView, UsageView
from llmqueue.api.waiting import job_detail

app_name = "api"

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = [
    path("stats/", StatsView.as_view(), name="stats"),
    path("usage/", UsageView.as_view(), name="usage"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file: the pages' CSP allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    # Redoc styles itself with <style> elements it writes at run time and searches in a blob:
    # worker: this one page's policy allows both.
    path(
        "redoc/",
        csp_update({"style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            SpectacularRedocView.as_view(url_name="api:schema")
        ),
        name="redoc",
    ),
    # Before the router's own route for it (job-detail, which the schema and links use): the
    # same view, with ?wait= waited for in an async view.
    path("jobs/<int:pk>/", job_detail),
    path("", include(router.urls)),
]
