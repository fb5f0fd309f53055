"""What ``GET /api/jobs/`` can be asked, and the rule that nothing asked is ignored: an unknown
query parameter or a bad value is a 400 naming it (``?batch=1`` once returned every job)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from llmqueue.models import Job, Kind, Status


class IntegerFilter(filters.NumberFilter):
    """A whole number (django-filter's NumberFilter takes decimals: ``priority=1.5``)."""

    field_class = forms.IntegerField


class JobFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Status.choices)
    kind = filters.ChoiceFilter(choices=Kind.choices)
    model = filters.CharFilter(max_length=200, help_text="the model name, exactly")
    batch = IntegerFilter(field_name="batch_id", min_value=1, help_text="a batch id")
    priority = IntegerFilter(min_value=0, max_value=9)
    priority_min = IntegerFilter(field_name="priority", lookup_expr="gte", min_value=0)
    priority_max = IntegerFilter(field_name="priority", lookup_expr="lte", max_value=9)
    created_after = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601, inclusive"
    )
    created_before = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601, exclusive"
    )
    ordering = filters.OrderingFilter(
        fields=("id", "created_at", "priority", "status", "finished_at"),
        help_text="a field, or -field for descending; default -id (newest first)",
    )

    class Meta:
        model = Job
        fields: list[str] = []


class Pagination(PageNumberPagination):
    """DRF's page numbers, with ``page_size`` and a clear 400 for a bad one (DRF falls back
    to the default in silence)."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise serializers.ValidationError(
                {"page_size": [f"must be a whole number from 1 to {self.max_page_size}"]}
            )
        return int(raw)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw != "last" and not (raw.isdigit() and int(raw) >= 1):
            raise serializers.ValidationError({"page": ["must be a whole number from 1"]})
        return super().paginate_queryset(queryset, request, view)


class StrictFilterBackend(filters.DjangoFilterBackend):
    """django-filter on list views, refusing parameters it does not know. Other actions (one
    job, ``?wait=``) are left alone: they take their own parameters."""

    #: what the list takes besides its filters
    KNOWN = frozenset({"page", "page_size", "format"})

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        if getattr(view, "action", None) != "list":
            return queryset
        filterset_class = self.get_filterset_class(view, queryset)
        known = set(self.KNOWN) | set(filterset_class.base_filters if filterset_class else ())
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise serializers.ValidationError(
                {
                    name: [f"unknown parameter; this list takes {', '.join(sorted(known))}"]
                    for name in unknown
                }
            )
        return super().filter_queryset(request, queryset, view)
