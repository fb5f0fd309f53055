"""The admin of jobs and dead letters: read-only pages, retries through ``llmqueue.jobs``.

Dead letters are grouped by what they died of (a list filter and a summary above the list),
and can be retried as they are or on another endpoint that serves their model.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from llmqueue.errors import TransitionError
from llmqueue.jobs import job_retry, jobs_retry, selectors
from llmqueue.models import DeadLetter, Endpoint, Job, JobAttempt, Status

_TONES = {
    "succeeded": "ok",
    "dead": "bad",
    "running": "info",
    "queued": "warn",
    "cancelled": "warn",
    "expired": "warn",
}


def endpoint_badge(endpoint: Endpoint | None) -> str:
    """An endpoint's name, colored by its health, linked to its admin page."""
    if endpoint is None:
        return "-"
    if not endpoint.enabled:
        tone, state = "muted", "disabled"
    elif not endpoint.healthy or endpoint.breaker_state == "open":
        tone, state = "bad", f"unhealthy or breaker {endpoint.breaker_state}"
    elif endpoint.breaker_state != "closed":
        tone, state = "warn", f"breaker {endpoint.breaker_state}"
    else:
        tone, state = "ok", "healthy"
    return format_html(
        '<a class="llmq-badge llmq-{}" href="{}" title="{}">{}</a>',
        tone,
        reverse("admin:llmqueue_endpoint_change", args=[endpoint.pk]),
        state,
        endpoint.name,
    )


def _flat(row: str | tuple[str, ...]) -> tuple[str, ...]:
    return row if isinstance(row, tuple) else (row,)


def _json_block(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html(
        '<pre style="white-space:pre-wrap;max-height:30rem;overflow:auto">{}</pre>', text
    )


class AttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "number",
        "endpoint_link",
        "started_at",
        "duration",
        "http_status",
        "outcome",
        "error",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="duration")
    def duration(self, obj: JobAttempt) -> str:
        return "-" if obj.duration_ms is None else f"{obj.duration_ms:.0f} ms"

    @admin.display(description="endpoint")
    def endpoint_link(self, obj: JobAttempt) -> str:
        if obj.endpoint_id is None:
            return obj.endpoint_name or "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:llmqueue_endpoint_change", args=[obj.endpoint_id]),
            obj.endpoint_name,
        )


class ErrorReasonFilter(admin.SimpleListFilter):
    """Dead letters by what they died of (the error without "gave up after N attempts")."""

    title = "error"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (g["reason"], f"{g['reason'][:60]} ({g['count']})")
            for g in selectors.dead_letter_groups(limit=20)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        if reason := self.value():
            return queryset.filter(selectors.error_reason_q(reason))
        return queryset


class RetryOnEndpointForm(forms.Form):
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.filter(enabled=True),
        widget=forms.RadioSelect,
        empty_label=None,
        help_text="Jobs whose model this endpoint does not serve are left dead.",
    )


class JobAdminBase(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "status_badge",
        "kind",
        "model",
        "priority",
        "attempts",
        "endpoint_link",
        "batch_link",
        "created_at",
    ]
    list_filter = ["status", "priority", "kind", "endpoint"]
    search_fields = ["=id", "model", "owner__username", "idempotency_key", "custom_id", "error"]
    list_select_related = ["owner", "endpoint"]
    inlines = [AttemptInline]
    #: the job page's sections; the Job fields not named here (e.g. added later) go to "More"
    sections: list[tuple[str | None, list[Any]]] = [
        (
            None,
            [
                "owner",
                "batch",
                "kind",
                "model",
                "status",
                "priority",
                ("attempts", "max_attempts"),
                "endpoint_link",
                "pinned_endpoint",
                "custom_id",
                "idempotency_key",
            ],
        ),
        ("Request and answer", ["payload_json", "result_json", "error"]),
        (
            "Times",
            [
                "created_at",
                "available_at",
                "deadline",
                "started_at",
                "finished_at",
                "lease_expires_at",
            ],
        ),
    ]
    #: shown otherwise (endpoint_link, payload_json, result_json) or internal
    hidden = {"id", "endpoint", "payload", "result", "lease_token"}
    actions = ["retry_selected", "retry_on_endpoint"]

    class Media:
        css = {"all": ["llmqueue/admin.css"]}

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        named = {f for _, fields in self.sections for row in fields for f in _flat(row)}
        more = [
            f.name for f in Job._meta.fields if f.name not in named and f.name not in self.hidden
        ]
        return [
            *((title, {"fields": fields}) for title, fields in self.sections),
            ("More", {"fields": more, "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [
            f
            for _, spec in self.get_fieldsets(request, obj)
            for r in spec["fields"]
            for f in _flat(r)
        ]

    @admin.display(description="payload")
    def payload_json(self, obj: Job) -> str:
        return _json_block(obj.payload)

    @admin.display(description="result")
    def result_json(self, obj: Job) -> str:
        return "-" if obj.result is None else _json_block(obj.result)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API or the form, never hand-made

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # The batch links of the list filter by batch without listing every batch as a filter.
        return lookup == "batch__id__exact" or super().lookup_allowed(lookup, value, request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the state machine (llmqueue.jobs) is the only writer

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return format_html(
            '<span class="llmq-badge llmq-{}">{}</span>',
            _TONES.get(obj.status, "muted"),
            obj.status,
        )

    @admin.display(description="endpoint", ordering="endpoint__name")
    def endpoint_link(self, obj: Job) -> str:
        return endpoint_badge(obj.endpoint)

    @admin.display(description="batch", ordering="batch")
    def batch_link(self, obj: Job) -> str:
        if obj.batch_id is None:
            return "-"
        url = reverse(f"admin:llmqueue_{self.model._meta.model_name}_changelist")
        return format_html(
            '<a href="{}?batch__id__exact={}">{}</a>', url, obj.batch_id, obj.batch_id
        )

    @admin.action(description="Retry selected", permissions=["view"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        n = jobs_retry(job_ids=queryset.values_list("pk", flat=True))
        skipped = queryset.count() - n if n < queryset.count() else 0
        msg = f"Queued {n} job(s) again."
        if skipped:
            msg += f" {skipped} were not dead or cancelled and were left alone."
        self.message_user(request, msg, messages.SUCCESS if n else messages.WARNING)

    @admin.action(description="Retry selected on another endpoint…", permissions=["view"])
    def retry_on_endpoint(
        self, request: HttpRequest, queryset: QuerySet[Job]
    ) -> TemplateResponse | None:
        form = RetryOnEndpointForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            endpoint = form.cleaned_data["endpoint"]
            ids = list(queryset.values_list("pk", flat=True))
            n = jobs_retry(job_ids=ids, endpoint_id=endpoint.pk)
            msg = f"Queued {n} job(s) again, pinned to {endpoint.name}."
            if n < len(ids):
                msg += (
                    f" {len(ids) - n} were left alone: not dead or cancelled, or of a model "
                    f"{endpoint.name} does not serve."
                )
            self.message_user(request, msg, messages.SUCCESS if n else messages.WARNING)
            return None
        models = sorted(set(queryset.values_list("model", flat=True)))
        endpoints = [
            {"endpoint": e, "serves": sorted(set(models) & set(e.served_models or []))}
            for e in Endpoint.objects.filter(enabled=True)
        ]
        return TemplateResponse(
            request,
            "admin/llmqueue/retry_on_endpoint.html",
            {
                **self.admin_site.each_context(request),
                "title": "Retry on another endpoint",
                "opts": self.model._meta,
                "ids": list(queryset.values_list("pk", flat=True)),
                "models": models,
                "endpoints": endpoints,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        return [
            path(
                "<int:pk>/retry/",
                self.admin_site.admin_view(self.retry_one),
                name=f"{opts.app_label}_{opts.model_name}_retry",
            ),
            *super().get_urls(),
        ]

    def retry_one(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(Job, pk=pk)
        if request.method == "POST":
            try:
                job_retry(job_id=job.pk)
            except TransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Job {job.pk} queued again.", messages.SUCCESS)
        # Its page among all jobs: once requeued it is no longer a dead letter.
        return HttpResponseRedirect(reverse("admin:llmqueue_job_change", args=[job.pk]))


@admin.register(Job)
class JobAdmin(JobAdminBase):
    pass


@admin.register(DeadLetter)
class DeadLetterAdmin(JobAdminBase):
    list_display = [
        "id",
        "owner",
        "model",
        "attempts",
        "short_error",
        "endpoint_link",
        "batch_link",
        "finished_at",
    ]
    list_filter = [ErrorReasonFilter, "priority", "kind", "endpoint"]
    change_form_template = "admin/llmqueue/deadletter/change_form.html"
    change_list_template = "admin/llmqueue/deadletter/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).filter(status=Status.DEAD)

    @admin.display(description="error")
    def short_error(self, obj: Job) -> str:
        return format_html('<span title="{}">{}</span>', obj.error, obj.error[:120])

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        groups = selectors.dead_letter_groups(limit=10)
        return super().changelist_view(request, {**(extra_context or {}), "error_groups": groups})
