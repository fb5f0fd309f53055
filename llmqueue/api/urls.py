"""The REST API's routes, in the "api" namespace: the pages use the names job-list and
job-detail too, and without a namespace the API root linked ``jobs`` to the web page."""

from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import DefaultRouter

from llmqueue.api.views import EndpointViewSet, JobViewSet, StatsView, UsageView

app_name = "api"

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("endpoints", EndpointViewSet, basename="endpoint")

urlpatterns = [
    path("stats/", StatsView.as_view(), name="stats"),
    path("usage/", UsageView.as_view(), name="usage"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file: the pages' CSP allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("", include(router.urls)),
]
