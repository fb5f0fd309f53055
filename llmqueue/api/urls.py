from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from llmqueue.api.views import EndpointViewSet, JobViewSet, StatsView, UsageView

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("endpoints", EndpointViewSet, basename="endpoint")

urlpatterns = [
    path("stats/", StatsView.as_view(), name="api-stats"),
    path("usage/", UsageView.as_view(), name="api-usage"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include(router.urls)),
]
